"""Validate a dataset root on disk before any training: categories, layout, masks, counts, readability.

`check_dataset` returns a `DatasetCheck` (per-category counts, errors and notes) that
`vadbench data check` prints and `vadbench run` uses in its preflight. Every image and mask is fully
decoded (a truncated file is named before training, not while scoring) and paths anomalib refuses
(non-ASCII) are named with the fix. Decode results are cached per file (size, mtime) under
outputs/cache/image-checks, so a category is decoded once; docs/datasets.md states the cost.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vadbench.config import DatasetSpec
from vadbench.data.images import IMAGE_SUFFIXES, anomalib_refuses, decode_all, decode_cache, images_below, images_in
from vadbench.data.visa import VISA_CONVERTED, VISA_SPLIT_CSV, read_split_csv
from vadbench.errors import DatasetError
from vadbench.registry import Counts, DatasetInfo, info

SHOW = 3  # paths named per problem before "... and N more"


@dataclass
class CategoryCheck:
    """What one category folder holds and what is wrong with it."""

    category: str
    counts: Counts | None = None  # (train good, test good, test defect) found
    expected: Counts | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class DatasetCheck:
    """The result of checking one dataset root."""

    kind: str
    root: Path
    categories: list[CategoryCheck] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every error, root-level first, each naming its path."""
        return self.errors + [f"{c.category}: {e}" for c in self.categories for e in c.errors]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def table(self) -> str:
        """Per-category counts against the expected numbers, then errors and notes."""
        lines = [f"{self.kind} at {self.root}",
                 f"  {'category':<14}{'train good':>11}{'test good':>10}{'test defect':>12}  {'expected':<13}status"]
        for c in self.categories:
            found = c.counts or ("-", "-", "-")
            expected = "/".join(map(str, c.expected)) if c.expected else ("unpublished" if self.kind == "wfdd" else "-")
            status = "ERROR" if c.errors else "ok"
            lines.append(f"  {c.category:<14}{found[0]:>11}{found[1]:>10}{found[2]:>12}  {expected:<13}{status}")
        if len(self.categories) > 1 and all(c.counts for c in self.categories):
            total = [sum(c.counts[i] for c in self.categories) for i in range(3)]
            lines.append(f"  {'total':<14}{total[0]:>11}{total[1]:>10}{total[2]:>12}")
        lines += [f"  error: {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self._notes()]
        return "\n".join(lines)

    def _notes(self) -> list[str]:
        """Notes, a note shared by every category once (the root's path made generic), else per category."""
        def generic(c: CategoryCheck, note: str) -> str:
            return note.replace(f"/{c.category}/", "/<category>/").replace(f"/{c.category}", "/<category>")

        shared = {generic(c, n) for c in self.categories for n in c.notes}
        out = []
        for note in sorted(shared):
            owners = [c.category for c in self.categories if note in {generic(c, n) for n in c.notes}]
            out.append(f"{note}" if len(owners) == len(self.categories) > 1 else f"{', '.join(owners)}: {note}")
        return out

    def raise_if_failed(self) -> None:
        """DatasetError with the first problem (and how many more) unless the check passed."""
        problems = self.problems
        if problems:
            more = f" (and {len(problems) - 1} more problems: `vadbench data check {self.kind} --root {self.root}` lists them)" \
                if len(problems) > 1 else ""
            raise DatasetError(f"dataset {self.kind} at {self.root}: {problems[0]}{more}")


def check_dataset(kind: str, root: Path | str, categories: list[str] | None = None) -> DatasetCheck:
    """Check a root for the given categories (default: all of the kind's, or every folder for `folder`)."""
    entry, root = info(kind), Path(root)
    result = DatasetCheck(kind, root)
    if not root.is_dir():
        result.errors.append(f"root {root} does not exist; {entry.unpack} (`vadbench data where {kind}` says where to get it)")
        return result
    if categories is None:
        categories = list(entry.categories) or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not categories:
        result.errors.append(f"no category folder in {root}; {entry.unpack}")
    for category in categories:
        result.categories.append(check_category(kind, root, category))
    return result


def check_category(kind: str, root: Path | str, category: str) -> CategoryCheck:
    """Check one category of a root (the root itself is assumed to exist)."""
    with decode_cache(root):
        return _check_category(kind, Path(root), category)


def require_category(dataset: DatasetSpec, category: str) -> CategoryCheck | None:
    """Raise DatasetError on the first problem of one category of a run's dataset; the check (None for the demo).

    Real datasets are fully validated (layout, masks, counts, readability); the demo, built by our
    own code, for its folders and decodable images only.
    """
    root, entry = Path(dataset.root), info(dataset.kind)
    if not root.is_dir():
        raise DatasetError(f"dataset '{dataset.name}': root {root} does not exist; {entry.unpack} "
                           f"(`vadbench data where {dataset.kind}`)")
    if dataset.kind == "demo":
        missing = [root / category / sub for sub in ("train/good", "test/good") if not (root / category / sub).is_dir()]
        wrong = diagnose_root(entry, root, category) or (
            f"{missing[0]} is missing: not an MVTec AD layout; {entry.unpack}" if missing else "")
        if wrong:
            raise DatasetError(f"dataset '{dataset.name}': {wrong}")
    check = check_demo_category(root, category) if dataset.kind == "demo" else check_category(dataset.kind, root, category)
    if check.errors:
        more = f" (and {len(check.errors) - 1} more: `vadbench data check {dataset.kind} --root {root}`)" \
            if len(check.errors) > 1 else ""
        kind = "" if dataset.kind == "demo" else f" ({dataset.kind})"
        raise DatasetError(f"dataset '{dataset.name}'{kind} category '{category}': {check.errors[0]}{more}")
    return None if dataset.kind == "demo" else check


def check_demo_category(root: Path, category: str) -> CategoryCheck:
    """The demo (built by our code): no layout or count check, but every image below the category decodes and
    its paths are ones anomalib takes."""
    check = CategoryCheck(category)
    with decode_cache(root):
        paths = images_below(root / category)
        if _check_paths(root / category, paths, check):
            _check_readable(paths, check)
    return check


def _check_category(kind: str, root: Path, category: str) -> CategoryCheck:
    entry = info(kind)
    check = CategoryCheck(category, expected=entry.expected.get(category))
    if entry.categories and category not in entry.categories:
        check.errors.append(f"unknown category '{category}' for {kind}; known: {list(entry.categories)}")
        return check
    wrong = diagnose_root(entry, root, category)
    if wrong:
        check.errors.append(wrong)
        return check
    if not _check_paths(root / category, images_below(root / category), check):
        return check
    fix = "an incomplete or modified copy; re-download or re-unpack it"
    if entry.layout == "visa":
        converted = root / VISA_CONVERTED / category
        if converted.is_dir():
            check.notes.append(f"using the converted 1cls split in {root / VISA_CONVERTED}")
            _check_mvtec_like(converted, entry, check)
            fix = f"an interrupted or modified conversion; delete {root / VISA_CONVERTED} to convert again"
        else:
            _check_visa_raw(root, category, entry, check)
    elif entry.layout == "folder":
        _check_folder(root / category, check)
    else:
        _check_mvtec_like(root / category, entry, check)
    _compare_counts(entry, check, fix)
    return check


def diagnose_root(entry: DatasetInfo, root: Path, category: str) -> str:
    """An error naming the fix when `root/category` is not where the category should be, else ''."""
    if entry.layout == "visa" and (root.name == VISA_CONVERTED or (root / category / "train" / "good").is_dir()):
        return f"{root} is anomalib's converted folder: set the root to its parent {root.parent}"
    if (root / category).is_dir():
        return ""
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if _looks_like_category(root):
        return f"root {root} is itself a category folder: set the root to its parent {root.parent}"
    for sub in found:
        if (root / sub / category).is_dir():
            return (f"no category '{category}' in {root}, but {root / sub / category} exists: "
                    f"set the root to {root / sub} (the folder that holds the categories)")
    if entry.layout == "mvtec" and any((root / f / "Data" / "Images").is_dir() for f in found):
        return f"{root} holds VisA's raw layout (<cat>/Data/Images): use dataset kind 'visa'"
    return f"no category '{category}' in {root} (found: {found}); {entry.unpack}"


def _looks_like_category(folder: Path) -> bool:
    return any((folder / sub).is_dir() for sub in ("train/good", "Data/Images", "good"))


def _named(paths: list, what: str) -> str:
    shown = ", ".join(str(p) for p in paths[:SHOW])
    more = f" ... and {len(paths) - SHOW} more" if len(paths) > SHOW else ""
    return f"{len(paths)} {what}: {shown}{more}"


def _check_paths(folder: Path, paths: list[Path], check: CategoryCheck) -> bool:
    """False (with an error naming the fix) when anomalib would refuse the folder or a file below it.

    anomalib resolves symlinks before it checks, so the resolved path is what must be printable ASCII.
    """
    resolved = folder.resolve()
    if anomalib_refuses(resolved):
        check.errors.append(f"{folder} (resolved: {resolved}) has non-ASCII characters, which anomalib refuses "
                            "(\"Path contains non-printable characters\"; it follows symlinks, so an ASCII symlink "
                            "to it does not help): move or rename the dataset to an ASCII path and set the root "
                            "there (a symlink from the old name to the new path keeps other tools working)")
        return False
    bad = [p for p in paths if anomalib_refuses(resolved / p.relative_to(folder))]
    if bad:
        check.errors.append(_named(bad, "file(s) whose names anomalib refuses (non-ASCII characters): "
                                        "rename them to ASCII"))
        return False
    return True


def _check_readable(paths: list[Path], check: CategoryCheck) -> dict[Path, tuple[int, int]]:
    """Sizes of the images, fully decoded; one error naming every file that does not decode, each with why."""
    sizes, bad = {}, []
    for path, decoded in decode_all(paths).items():
        if decoded.size is None:
            bad.append(f"{path} ({decoded.error})")
        else:
            sizes[path] = decoded.size
    if bad:
        check.errors.append(f"{len(bad)} unreadable image(s) (not a valid image file; re-copy them): "
                            + ", ".join(bad))
    return sizes


def mask_for(image: Path, mask_dir: Path) -> Path | None:
    """The mask of a defect image: `<stem>.<ext>` or `<stem>_mask.<ext>` in mask_dir, or None."""
    for name in (image.stem, image.stem + "_mask"):
        for suffix in (".png", ".PNG", *IMAGE_SUFFIXES):
            candidate = mask_dir / (name + suffix)
            if candidate.is_file():
                return candidate
    return None


def _check_masks(defects: list[Path], mask_dir: Path, sizes: dict, check: CategoryCheck) -> None:
    """Every defect image has a readable mask of its own size in mask_dir."""
    missing, wrong = [], []
    found = {image: mask_for(image, mask_dir) for image in defects}
    decoded = decode_all([m for m in found.values() if m is not None])
    for image, mask in found.items():
        if mask is None:
            missing.append(image)
            continue
        size = decoded[mask].size
        if size is None:
            wrong.append(f"{mask} (unreadable: {decoded[mask].error})")
        elif image in sizes and size != sizes[image]:
            wrong.append(f"{mask} is {size[0]}x{size[1]} but {image.name} is {sizes[image][0]}x{sizes[image][1]}")
    if missing:
        check.errors.append(_named(missing, f"defect image(s) without a mask in {mask_dir} "
                                            "(expected <name>.png or <name>_mask.png)"))
    if wrong:
        check.errors.append(_named(wrong, "mask(s) of the wrong size or unreadable"))


def _check_mvtec_like(folder: Path, entry: DatasetInfo, check: CategoryCheck) -> None:
    """<cat>/train/good, <cat>/test/{good,<defect>}, <cat>/ground_truth/<defect>/<name>[_mask].png."""
    for sub in ("train/good", "test/good"):
        if not (folder / sub).is_dir():
            check.errors.append(f"{folder / sub} is missing: not an MVTec-like layout; {entry.unpack}")
            return
    train, good = images_in(folder / "train/good"), images_in(folder / "test/good")
    defect_dirs = sorted(p for p in (folder / "test").iterdir() if p.is_dir() and p.name != "good")
    defects = {d.name: images_in(d) for d in defect_dirs}
    check.counts = (len(train), len(good), sum(len(v) for v in defects.values()))
    if not train:
        check.errors.append(f"{folder / 'train/good'} holds no image")
    sizes = _check_readable(train + good + [p for v in defects.values() for p in v], check)
    for name, images in defects.items():
        if images:
            _check_masks(images, folder / "ground_truth" / name, sizes, check)


def _check_visa_raw(root: Path, category: str, entry: DatasetInfo, check: CategoryCheck) -> None:
    """VisA as released: <cat>/Data/Images/{Normal,Anomaly}, <cat>/Data/Masks/Anomaly, split_csv/1cls.csv."""
    split_csv = root / VISA_SPLIT_CSV
    if not (root / category / "Data" / "Images").is_dir():
        check.errors.append(f"{root / category / 'Data/Images'} is missing: not VisA's raw layout; {entry.unpack}")
        return
    if not split_csv.is_file():
        check.errors.append(f"{split_csv} is missing: VisA needs its official split; unpack the complete "
                            "VisA_20220922.tar (it holds split_csv/1cls.csv) into the root")
        return
    rows = [r for r in read_split_csv(split_csv) if r["object"] == category]
    count = lambda split, label: sum(1 for r in rows if r["split"] == split and r["label"] == label)  # noqa: E731
    check.counts = (count("train", "normal"), count("test", "normal"), count("test", "anomaly"))
    images = [root / r["image"] for r in rows]
    absent = [p for p in images if not p.is_file()]
    if absent:
        check.errors.append(_named(absent, f"image(s) listed in {split_csv} but missing"))
    sizes = _check_readable([p for p in images if p.is_file()], check)
    _check_visa_masks(root, [r for r in rows if r["label"] == "anomaly"], sizes, check)
    if not os.access(root, os.W_OK):
        check.errors.append(f"{root} is read-only, but the 1cls conversion writes {root / VISA_CONVERTED}: copy the "
                            "dataset to a writable folder and use that as the root (Kaggle shards and rehearsals "
                            "do this themselves, into a scratch folder)")
    check.notes.append(f"raw layout: converted to {root / VISA_CONVERTED} (anomalib's 1cls split) on the first run")


def _check_visa_masks(root: Path, anomalies: list[dict[str, str]], sizes: dict, check: CategoryCheck) -> None:
    missing, wrong = [], []
    pairs = [(root / r["image"], root / r["mask"] if r.get("mask") else None) for r in anomalies]
    decoded = decode_all([m for _, m in pairs if m is not None and m.is_file()])
    for image, mask in pairs:
        if mask is None or not mask.is_file():
            missing.append(image)
            continue
        size = decoded[mask].size
        if size is None or (image in sizes and size != sizes[image]):
            wrong.append(f"{mask} ({'unreadable' if size is None else f'{size[0]}x{size[1]}'}, image "
                         f"{image.name} is {'?' if image not in sizes else f'{sizes[image][0]}x{sizes[image][1]}'})")
    if missing:
        check.errors.append(_named(missing, "anomaly image(s) without a mask file"))
    if wrong:
        check.errors.append(_named(wrong, "mask(s) of the wrong size or unreadable"))


def _check_folder(folder: Path, check: CategoryCheck) -> None:
    """A user's folder: good/ and defect/ images, optional mask/ (one per defect image) and test_good/."""
    fix = info("folder").unpack
    for sub in ("good", "defect"):
        if not (folder / sub).is_dir():
            check.errors.append(f"{folder / sub} is missing; {fix}")
            return
    good, defect, test_good = images_in(folder / "good"), images_in(folder / "defect"), images_in(folder / "test_good")
    check.counts = (len(good), len(test_good), len(defect))
    for sub, images in (("good", good), ("defect", defect)):
        if not images:
            check.errors.append(f"{folder / sub} holds no image")
    sizes = _check_readable(good + defect + test_good, check)
    if (folder / "mask").is_dir():
        _check_masks(defect, folder / "mask", sizes, check)
    else:
        check.notes.append(f"no {folder / 'mask'}: image metrics only (pixel metrics are recorded as undefined)")
    if not test_good:
        check.notes.append("no test_good/: 20 % of good/ is held out as normal test images (seeded); "
                           "'train good' above counts all of good/")


def _compare_counts(entry: DatasetInfo, check: CategoryCheck, fix: str) -> None:
    """Counts against the published ones: an error for strict kinds, information otherwise."""
    if check.counts is None:
        return
    if check.expected is None:
        if entry.kind == "wfdd":
            check.notes.append("per-category counts are not published for WFDD (4,101 images in all); recorded as found")
        return
    if tuple(check.counts) != tuple(check.expected):
        found, want = "/".join(map(str, check.counts)), "/".join(map(str, check.expected))
        message = f"found {found} images (train good/test good/test defect), expected {want}: {fix}"
        (check.errors if entry.strict_counts else check.notes).append(message)
