"""One run: fit, score, metrics, timing, environment and the per-run figure (what train_evaluate.ipynb calls)."""
