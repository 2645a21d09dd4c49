"""Dataset registry, `vadbench data check|where`, splits without leakage, undersampling, and the study's
experiment files, on synthetic replicas of each dataset's exact layout (nothing is downloaded)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

import replicas
from vadbench import cli, config, registry
from vadbench.config import DatasetSpec, EvaluationSpec, ModelSpec, RunSpec, TrainSpec
from vadbench.data import checks, datamodules, splits, visa
from vadbench.errors import ConfigError, DatasetError
from vadbench.launch import runner

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """Full-count replicas: MVTec AD (15 categories), raw VisA (12 + split CSV), WFDD (4), a folder."""
    root = tmp_path_factory.mktemp("replicas")
    replicas.build_mvtec_ad(root / "mvtec_ad")
    replicas.build_visa_raw(root / "visa")
    replicas.build_wfdd(root / "wfdd")
    replicas.build_folder(root / "folder", categories=("widget", "gadget"))
    return root


def check_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout with runs of spaces collapsed (table columns), stderr."""
    code = cli.main(["data", "check", *args])
    out, err = capsys.readouterr()
    return code, "\n".join(" ".join(line.split()) for line in out.splitlines()), err


@pytest.mark.parametrize("kind, totals", [
    ("mvtec_ad", "total 3629 467 1258"),
    ("visa", "total 8659 962 1200"),
    ("wfdd", "total 40 12 16"),
    ("folder", "gadget 12 0 4"),
])
def test_check_passes_on_each_replica(full, capsys, kind, totals):
    code, out, err = check_cli(capsys, kind, "--root", str(full / kind))
    assert code == 0, err
    assert totals in out and "ERROR" not in out
    if kind == "wfdd":  # WFDD's per-category counts are unpublished: printed as found, never an error
        assert "grey_cloth 10 3 4 unpublished ok" in out


def test_root_comes_from_the_environment(full, capsys, monkeypatch):
    monkeypatch.setenv("VADBENCH_WFDD_ROOT", str(full / "wfdd"))
    code, out, _ = check_cli(capsys, "wfdd")
    assert code == 0 and f"wfdd at {full / 'wfdd'}" in out
    assert registry.resolve_root("wfdd", "given/root") == "given/root"
    monkeypatch.delenv("VADBENCH_WFDD_ROOT")
    assert registry.resolve_root("wfdd", "") == "datasets/wfdd"


def copy_category(full: Path, kind: str, category: str, dest: Path) -> Path:
    shutil.copytree(full / kind / category, dest / category)
    return dest / category


def _drop_mask(folder: Path) -> str:
    next(iter(sorted((folder / "ground_truth/crack").iterdir()))).unlink()
    return "1 defect image(s) without a mask in"


def _shrink_mask(folder: Path) -> str:
    mask = sorted((folder / "ground_truth/hole").iterdir())[0]
    Image.new("L", (12, 12)).save(mask)
    return f"{mask} is 12x12 but 001.png is 24x24"


def _corrupt_image(folder: Path) -> str:
    (folder / "test/good/003.png").write_bytes(b"not an image")
    return f"1 unreadable image(s) (not a valid image file; re-copy them): {folder / 'test/good/003.png'}"


def _drop_train_image(folder: Path) -> str:
    (folder / "train/good/000.png").unlink()
    return "found 208/20/63 images (train good/test good/test defect), expected 209/20/63"


@pytest.mark.parametrize("breaks", [_drop_mask, _shrink_mask, _corrupt_image, _drop_train_image])
def test_check_names_each_broken_mvtec_category(full, tmp_path, capsys, breaks):
    folder = copy_category(full, "mvtec_ad", "bottle", tmp_path)
    needle = breaks(folder)
    code, out, err = check_cli(capsys, "mvtec_ad", "--root", str(tmp_path), "--categories", "bottle")
    assert code == 2 and needle in out
    assert err.startswith("vadbench: error: dataset mvtec_ad at") and needle.split(":")[0] in err


def test_count_mismatch_is_information_for_wfdd(full, tmp_path, capsys):
    folder = copy_category(full, "wfdd", "grid_cloth", tmp_path)
    (folder / "train/good/000.jpg").unlink()
    code, out, _ = check_cli(capsys, "wfdd", "--root", str(tmp_path), "--categories", "grid_cloth")
    assert code == 0 and "grid_cloth 9 3 4 unpublished ok" in out


@pytest.mark.parametrize("case, kind, needle", [
    ("missing", "mvtec_ad", "root {tmp}/nowhere does not exist; unpack so that <root>/bottle/train/good/000.png exists"),
    ("parent", "mvtec_ad", "no category 'bottle' in {tmp}/parent, but {tmp}/parent/mvtec_ad/bottle exists: "
                           "set the root to {tmp}/parent/mvtec_ad"),
    ("category", "mvtec_ad", "root {tmp}/parent/mvtec_ad/bottle is itself a category folder: set the root to its "
                             "parent {tmp}/parent/mvtec_ad"),
    ("visa_as_mvtec", "mvtec_ad", "{tmp}/visa holds VisA's raw layout (<cat>/Data/Images): use dataset kind 'visa'"),
    ("visa_no_csv", "visa", "{tmp}/visa/split_csv/1cls.csv is missing: VisA needs its official split"),
    ("visa_converted_dir", "visa", "{tmp}/visa/visa_pytorch is anomalib's converted folder: set the root to its "
                                   "parent {tmp}/visa"),
    ("unknown_category", "mvtec_ad", "unknown category 'bottel' for mvtec_ad; known: ['bottle'"),
    ("folder_no_defect", "folder", "{tmp}/own/widget/defect is missing; put each category in <root>/<category>/"),
])
def test_check_wrong_roots_name_the_path_and_fix(full, tmp_path, capsys, case, kind, needle):
    (tmp_path / "parent").mkdir()
    copy_category(full, "mvtec_ad", "bottle", tmp_path / "parent" / "mvtec_ad")
    roots = {"missing": tmp_path / "nowhere", "parent": tmp_path / "parent",
             "category": tmp_path / "parent/mvtec_ad/bottle", "unknown_category": tmp_path / "parent/mvtec_ad"}
    categories = ["bottel"] if case == "unknown_category" else ["bottle"]
    if case.startswith("visa"):
        replicas.build_visa_raw(tmp_path / "visa", {"candle": (3, 1, 2)})
        roots[case] = tmp_path / "visa"
        categories = ["candle"] if kind == "visa" else ["bottle"]
        if case == "visa_no_csv":
            (tmp_path / "visa/split_csv/1cls.csv").unlink()
        if case == "visa_converted_dir":
            (tmp_path / "visa/visa_pytorch/candle").mkdir(parents=True)
            roots[case] = tmp_path / "visa/visa_pytorch"
    if case == "folder_no_defect":
        replicas.build_folder(tmp_path / "own")
        shutil.rmtree(tmp_path / "own/widget/defect")
        roots[case], categories = tmp_path / "own", ["widget"]
    code, out, err = check_cli(capsys, kind, "--root", str(roots[case]), "--categories", *categories)
    assert code == 2
    assert needle.format(tmp=tmp_path) in out + err
    assert "Traceback" not in err


def test_where_names_url_kaggle_env_and_folder(capsys, monkeypatch):
    monkeypatch.delenv("VADBENCH_MVTEC_AD_ROOT", raising=False)
    assert cli.main(["data", "where", "mvtec_ad"]) == 0
    out = capsys.readouterr().out
    for needle in ("https://www.mvtec.com/company/research/datasets/mvtec-ad", "ipythonx/mvtec-ad",
                   "root:     datasets/mvtec_ad (default; set $VADBENCH_MVTEC_AD_ROOT",
                   "<root>/bottle/train/good/000.png"):
        assert needle in out
    assert cli.main(["data", "where", "wfdd"]) == 0
    assert "drive.google.com/file/d/1P8yfNnfoFsb0Lv-HRzkPQ2nD9qsL--Vk" in capsys.readouterr().out


# ---- config ---------------------------------------------------------------------------------------

def write_experiment(tmp_path: Path, **dataset) -> Path:
    exp = {"name": "t", "datasets": [{"name": "d", "kind": "wfdd", "categories": ["grey_cloth"], **dataset}],
           "models": [{"name": "m", "kind": "draem", "train": {"max_steps": 1, "batch_size": 2}}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


@pytest.mark.parametrize("dataset, needle", [
    ({"categories": ["gray_cloth"]}, "unknown wfdd category 'gray_cloth'; known: ['grey_cloth'"),
    ({"train_ratio": 0.0}, "datasets[d].train_ratio must lie in (0, 1], got 0.0"),
    ({"kind": "kolektor"}, "'kolektor' is not one of ['demo', 'mvtec_ad', 'visa', 'wfdd', 'folder']"),
])
def test_config_rejects_bad_datasets(tmp_path, dataset, needle):
    with pytest.raises(ConfigError) as err:
        config.load_experiment(write_experiment(tmp_path, **dataset))
    assert needle in str(err.value)


def test_config_resolves_root_and_val_source(tmp_path, monkeypatch):
    monkeypatch.setenv("VADBENCH_WFDD_ROOT", "/data/wfdd")
    exp = config.load_experiment(write_experiment(tmp_path, train_ratio=0.5))
    run = config.expand_runs(exp)[0]
    assert run.dataset.root == "/data/wfdd" and run.config()["dataset"]["train_ratio"] == 0.5
    assert run.config()["evaluation"]["val_source"] == "train"


# ---- splits, undersampling, leakage ----------------------------------------------------------------

def make_run(root: Path, kind: str, category: str, train_ratio: float = 1.0, val_source: str = "train",
             seed: int = 0) -> RunSpec:
    model = ModelSpec(name="m", kind="draem", train=TrainSpec(max_steps=1, batch_size=2))
    ds = DatasetSpec(name=kind, kind=kind, categories=[category], root=str(root), train_ratio=train_ratio)
    return RunSpec("t", "f", model, ds, category, seed, "cpu", EvaluationSpec(val_ratio=0.2, val_source=val_source))


def subsets(run: RunSpec) -> tuple[dict, set, set, set]:
    module = datamodules.build_datamodule(run, 2)
    module.setup("fit")
    paths = [set(getattr(module, f"{s}_data").samples.image_path) for s in ("train", "val", "test")]
    return splits.split_counts(module), *paths


def test_held_out_split_and_undersampling_are_seeded_and_disjoint(full):
    run = make_run(full / "mvtec_ad", "mvtec_ad", "toothbrush", train_ratio=0.5)
    counts, train, val, test = subsets(run)
    # toothbrush: 60 normal training images -> 12 held out, 48 left, half of them trained on.
    assert counts == {"train_images_available": 48, "train_images": 24, "val_images": 12,
                      "test_images_good": 12, "test_images_defect": 30}
    assert not (train & val) and not (train & test) and not (val & test)
    assert all("/train/good/" in p for p in train | val)
    plan = splits.plan_split(run.dataset, "toothbrush", 0.2, "train", checks.require_category(run.dataset, "toothbrush"))
    assert (plan.val_images, plan.available, plan.train_images) == (12, 48, 24)
    again = subsets(run)
    assert again[1:3] == (train, val)
    other = subsets(make_run(full / "mvtec_ad", "mvtec_ad", "toothbrush", train_ratio=0.5, seed=1))
    assert other[1] != train


def test_val_source_test_is_the_test_set(full):
    counts, train, val, test = subsets(make_run(full / "wfdd", "wfdd", "pink_flower", val_source="test"))
    assert val == test and counts["train_images"] == counts["train_images_available"] == 10
    assert counts["test_images_good"] == 3 and counts["test_images_defect"] == 4


def test_folder_holds_out_normal_test_images(full):
    counts, train, val, test = subsets(make_run(full / "folder", "folder", "widget"))
    assert counts == {"train_images_available": 8, "train_images": 8, "val_images": 2,
                      "test_images_good": 2, "test_images_defect": 4}
    assert not (train & test) and not (val & test)


def test_empty_train_set_after_undersampling_fails_before_training(full, tmp_path):
    path = write_experiment(tmp_path, root=str(full / "wfdd"), train_ratio=0.1)
    with pytest.raises(DatasetError) as err:
        runner.run_experiment(path, tmp_path / "out")
    assert str(err.value) == (
        "dataset 'd' category 'grey_cloth': no training image left (10 normal images, 2 held out for validation, "
        "train_ratio 0.1 of 8 keeps 0); raise datasets[d].train_ratio or lower evaluation.val_ratio")
    assert not (tmp_path / "out").exists()


def test_visa_is_never_downloaded(tmp_path, monkeypatch):
    """anomalib's Visa downloads when the raw category is missing; we refuse before it can."""
    import anomalib.data.datamodules.image.visa as visa_module

    monkeypatch.setattr(visa_module, "download_and_extract", lambda *a, **k: pytest.fail("download attempted"))
    replicas.build_visa_raw(tmp_path / "visa", {"candle": (3, 1, 2), "cashew": (2, 1, 1)})
    shutil.rmtree(tmp_path / "visa/cashew")
    with pytest.raises(DatasetError, match="cashew/Data/Images is missing, cannot convert the 1cls split"):
        visa.prepare_visa(tmp_path / "visa")
    assert not (tmp_path / "visa/visa_pytorch").exists()


# ---- the study's experiment files ------------------------------------------------------------------

@pytest.mark.parametrize("name, runs", [
    ("study_baseline", 2 * (15 + 12 + 4)), ("study_undersample", 2 * (15 + 12 + 4)),
    ("study_wfdd_tuned", 4), ("paper_recipes", 3 * 15), ("study_replay", 2 * (15 + 12 + 3)),
])
def test_experiment_files_dry_run(full, tmp_path, monkeypatch, caplog, name, runs):
    for kind in ("mvtec_ad", "visa", "wfdd"):
        monkeypatch.setenv(registry.info(kind).env_var, str(full / kind))
    monkeypatch.chdir(tmp_path)  # no datasets/dtd, datasets/imagenette here: named as missing model inputs
    caplog.set_level(logging.INFO)
    result = runner.run_experiment(PROJECT / "params/experiments" / f"{name}.yaml", "out", dry_run=True)
    assert result.total == runs and result.done == 0
    assert f"[{runs}/{runs}]" in caplog.text and f"dry run of {name}: {runs} runs; dataset roots checked" in caplog.text
    assert "model input missing" in caplog.text and result.exit_code == 1
    if name == "study_undersample":  # WFDD replica: 10 normal -> 2 held out -> half of 8 trained on
        assert "wfdd/grey_cloth seed0  root=" in caplog.text and "train=4 val=2" in caplog.text
    if name == "study_replay":  # the study's test counts: MVTec's full test sets, VisA's halves, WFDD's three
        assert "draem mvtec_ad/bottle seed0  root=" in caplog.text and "train=209 val=83 test=83 " in caplog.text
        assert "draem visa/candle seed0" in caplog.text and "train=900 val=100 test=100 " in caplog.text
        assert "train=542 val=80 test=80 " in caplog.text  # capsules: 60 good + 100 defect, halved per label
        assert "wfdd/grey_cloth" not in caplog.text and "train=10 val=3 test=4 " in caplog.text  # 3 + 4 halved
    assert not (tmp_path / "out").exists()


def test_interrupted_visa_conversion_says_to_convert_again(tmp_path, capsys):
    replicas.build_visa_raw(tmp_path / "visa", {"candle": (3, 1, 2)})
    replicas.build_mvtec_like(tmp_path / "visa/visa_pytorch", {"candle": (3, 1, 0)})
    code, out, _ = check_cli(capsys, "visa", "--root", str(tmp_path / "visa"), "--categories", "candle")
    assert code == 2
    assert (f"found 3/1/0 images (train good/test good/test defect), expected 900/100/100: an interrupted or "
            f"modified conversion; delete {tmp_path / 'visa/visa_pytorch'} to convert again") in out
