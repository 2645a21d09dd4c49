"""The bare anomalib baseline a `vadbench run` of the demo's DRÆM brick run is measured against.

The same work as that run, written as a plain anomalib script: MVTecAD datamodule on the demo's brick (held-out
split from the training images), DRÆM at 64 px on the demo's anomaly source, 8 steps at batch 4, evaluation
batch 4, then Engine.test. Run it from the project root after `vadbench demo-data`:

    python benchmarks/bare_draem.py                      # one timed run
    python benchmarks/run_cost.py --pairs 5              # paired with `vadbench run`: medians and the ratio
"""
from __future__ import annotations

import tempfile
import time

t0 = time.perf_counter()
from anomalib.data import MVTecAD  # noqa: E402
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator  # noqa: E402
from anomalib.engine import Engine  # noqa: E402
from anomalib.models import Draem  # noqa: E402
from lightning.pytorch import seed_everything  # noqa: E402

imported = time.perf_counter()
seed_everything(0, workers=True, verbose=False)
datamodule = MVTecAD(root="outputs/data/demo", category="brick", train_batch_size=4, eval_batch_size=4,
                     num_workers=0, val_split_mode="from_train", val_split_ratio=0.2, seed=0)
with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as work:
    model = Draem(dtd_dir=empty, beta=(0.1, 1.0), pre_processor=Draem.configure_pre_processor(image_size=(64, 64)),
                  evaluator=False, visualizer=False, post_processor=False)
    model.augmenter = PerlinAnomalyGenerator(anomaly_source_path="outputs/data/demo_anomaly_source",
                                             blend_factor=(0.1, 1.0))
    engine = Engine(accelerator="cpu", devices=1, max_steps=8, limit_val_batches=0, num_sanity_val_steps=0,
                    logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=work)
    engine.fit(model, datamodule=datamodule)
    fitted = time.perf_counter()
    engine.test(model, datamodule=datamodule, verbose=False)
done = time.perf_counter()
print(f"imports {imported - t0:.1f} s, fit {fitted - imported:.1f} s, test {done - fitted:.1f} s, "
      f"in-script total {done - t0:.1f} s")
