"""Kaggle, from your machine: shard planning, push, status, pull, the API boundary, Kaggle's rules, the code wheel,
the local rehearsal and the editor notebook. What runs inside a kernel lives in `kernel/`."""
