"""Launching runs: the grid and batch, one papermill execution per run, worker processes, submitit, Kaggle."""
