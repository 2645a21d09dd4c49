"""A Kaggle kernel's project directory: relative paths as in the params file, attached datasets linked in.

`prepare_project` lays out a project directory whose relative paths are those of the params file (the experiment
file, notebooks/train_evaluate.ipynb, a link per mount into /kaggle/input; a dataset root the params give as an
absolute path is linked at that path), so the runs' configs and
config hashes are those of the same runs on your machine; raw VisA from a read-only input gets a
writable scratch root (outside /kaggle/working) where anomalib's 1cls conversion writes, once per
session; inputs that are not mounted are fetched as the shard's params allow (`inputs`).
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from vadbench import records
from vadbench.data.visa import VISA_CONVERTED, VISA_SPLIT_CSV
from vadbench.errors import KaggleSetupError
from vadbench.launch.execute import NOTEBOOK
from vadbench.launch.kaggle.kernel import inputs

log = logging.getLogger(__name__)
KAGGLE_INPUT = Path("/kaggle/input")


def find_input(name: str, input_root: Path = KAGGLE_INPUT) -> Path:
    """The folder of an attached Kaggle dataset (`owner/slug` or `slug`).

    Kaggle mounts a dataset at `<input_root>/<slug>` and, in the layout the service now uses as well, at
    `<input_root>/datasets/<owner>/<slug>`; either is found, the owner's own folder first (two attached datasets may
    share a slug). Otherwise the slug is looked for at most three levels down.
    """
    owner, _, slug = name.rpartition("/")
    exact = ([input_root / "datasets" / owner / slug] if owner else []) + [input_root / slug]
    found = [p for p in exact if p.is_dir()]
    if found:
        return found[0]
    for pattern in (f"*/{slug}", f"*/*/{slug}", f"*/*/*/{slug}"):
        found = sorted(p for p in input_root.glob(pattern) if p.is_dir() and not _other_owners(p, input_root, owner))
        if found:
            return found[0]
    raise KaggleSetupError(f"dataset {name!r} is not attached under {input_root}; add it to the kernel's data")


def _other_owners(path: Path, input_root: Path, owner: str) -> bool:
    """Whether path is another owner's dataset in the datasets/<owner>/<slug> layout."""
    parts = path.relative_to(input_root).parts
    return bool(owner) and len(parts) == 3 and parts[0] == "datasets" and parts[1] != owner


def _source_of(target: str, input_root: Path) -> Path:
    parts = target.split("/")  # owner/slug[/sub/dir]
    return find_input("/".join(parts[:2]), input_root).joinpath(*parts[2:])


def writable_visa(source: Path, scratch: Path) -> Path:
    """A writable VisA root for a mounted (read-only) one: a copy in `scratch`, where anomalib's conversion writes.

    anomalib reads and writes only below the root it is given (it refuses links that lead out), so the
    raw release is copied, once per session (a marker file says the copy is complete). An already
    converted upload (the source holds visa_pytorch/, or is that folder) is used without a copy.
    """
    if (source / VISA_CONVERTED).is_dir():
        return source
    if not (source / VISA_SPLIT_CSV).is_file():
        if any((source / c / "train" / "good").is_dir() for c in os.listdir(source)):  # the converted folder itself
            scratch.mkdir(parents=True, exist_ok=True)
            if not (scratch / VISA_CONVERTED).exists():
                (scratch / VISA_CONVERTED).symlink_to(source, target_is_directory=True)
            return scratch
        return source  # not VisA: the dataset check names the problem
    marker = scratch / ".vadbench-copied"
    if not marker.is_file():
        log.info("VisA at %s is read-only: copying it to the scratch root %s for the 1cls conversion", source, scratch)
        shutil.copytree(source, scratch, dirs_exist_ok=True)
        for path in [scratch, *scratch.rglob("*")]:  # copies keep the read-only modes
            path.chmod(path.stat().st_mode | 0o200)
        marker.write_text(str(source))
    return scratch


def prepare_project(work_dir: str, code_dir: Path, experiment_path: str, experiment_yaml: str,
                    mounts: dict[str, str], git_commit: str, input_root: Path = KAGGLE_INPUT,
                    scratch_dir: str = "/tmp/vadbench-scratch", fetch: list[str] | None = None, teacher_weights: str = "",
                    output_dir: str = "/kaggle/working/runs") -> Path:
    """Build the project directory, chdir into it, set the env papermill kernels inherit, fetch what is allowed."""
    root, scratch = Path(work_dir), Path(scratch_dir)
    (root / experiment_path).parent.mkdir(parents=True, exist_ok=True)
    (root / experiment_path).write_text(experiment_yaml, encoding="utf-8")
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(code_dir) / NOTEBOOK, root / "notebooks" / NOTEBOOK)
    for local, target in mounts.items():
        source = _source_of(target, input_root)
        if Path(local).is_absolute() and _holds_same_files(Path(local), source):
            continue
        if (source / VISA_SPLIT_CSV).is_file() or (source / VISA_CONVERTED).is_dir():
            source = writable_visa(source, scratch / "visa" / local.strip("/").replace("/", "_"))
        _link(root / local, source)  # an absolute root (outside the project) is linked where the params name it
        log.info("mounted %s -> %s", local, source)
    os.environ.update({"VADBENCH_NOTEBOOKS": str(root / "notebooks"), "VADBENCH_GIT_COMMIT": git_commit,
                       "TQDM_DISABLE": "1"})
    os.chdir(root)
    facts = []
    if teacher_weights:
        _link(inputs.teacher_dir(), _source_of(teacher_weights, input_root))
        facts += [inputs.verify_teacher(p, f"mounted {teacher_weights}")
                  for p in sorted(inputs.teacher_dir().glob("pretrained_teacher_*.pth"))]
    facts += inputs.fetch_inputs(fetch or [], scratch)
    if facts:
        Path(output_dir).parent.mkdir(parents=True, exist_ok=True)
        records.write_json_atomic(Path(output_dir).parent / "fetched_inputs.json", {"inputs": facts})
    return root


def _holds_same_files(path: Path, source: Path) -> bool:
    """True when an absolute dataset root is already a folder here with the mounted dataset's files (names and
    sizes): a kernel replica on the machine that holds the data. A different folder there is an error."""
    if path.is_symlink() or not path.is_dir() or not any(path.iterdir()):
        return False

    def listing(root: Path) -> list[tuple[str, int]]:
        return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())

    if listing(path) != listing(source):
        raise KaggleSetupError(f"{path} exists in this kernel and is not the mounted dataset {source}: the params' "
                               "absolute root must be free to link (a Kaggle kernel has no such folder)")
    log.info("%s already holds the mounted dataset's files (%s): used as it is", path, source)
    return True


def _link(link: Path, source: Path) -> None:
    """Link `link` to `source`; a link there to the same source is kept (kernels of a replica share this machine's
    folders: another kernel may have made it, and may be reading through it)."""
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and os.readlink(link) == str(source):
            return
        if link.is_symlink():
            link.unlink()
        elif link.is_dir() and not any(link.iterdir()):
            link.rmdir()
        try:
            link.symlink_to(source, target_is_directory=True)
        except FileExistsError:
            if not (link.is_symlink() and os.readlink(link) == str(source)):  # made at the same instant elsewhere
                raise
    except OSError as exc:
        raise KaggleSetupError(f"cannot link {link} to the mounted {source} ({exc}); mount the dataset under a path "
                               "relative to the project root instead") from exc
