"""VisA on disk: where its split file and converted folder live, and the 1cls conversion, never downloading.

anomalib's `Visa` reads the 1cls split from `<root>/visa_pytorch/<category>`, converted from the raw
release by `apply_cls1_split`; its `prepare_data` would download when that folder is missing. Here the
conversion runs only after the split file and every category's raw images are found.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from vadbench.errors import DatasetError
from vadbench.locks import exclusive
from vadbench.registry import info

log = logging.getLogger(__name__)

VISA_SPLIT_CSV = Path("split_csv/1cls.csv")
VISA_CONVERTED = "visa_pytorch"


def read_split_csv(path: Path) -> list[dict[str, str]]:
    """Rows of VisA's split CSV by position, as anomalib reads it: object, split, label, image, mask."""
    keys = ("object", "split", "label", "image", "mask")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader, None)  # header
        return [dict(zip(keys, row)) for row in reader if row]


def prepare_visa(root: Path) -> None:
    """Convert raw VisA to anomalib's 1cls split under <root>/visa_pytorch, never downloading.

    anomalib's `Visa.prepare_data` downloads when `<root>/<category>` is missing; we convert only after
    finding split_csv/1cls.csv and the raw folder of every category it lists, and skip when each of
    those categories is converted already.
    """
    from anomalib.data import Visa

    split_csv = root / VISA_SPLIT_CSV
    if not split_csv.is_file() and (root / VISA_CONVERTED).is_dir():
        return  # an already-converted upload (only visa_pytorch/): nothing to convert
    if not split_csv.is_file():
        raise DatasetError(f"VisA at {root}: {split_csv} is missing; {info('visa').unpack}")
    listed = sorted({row["object"] for row in read_split_csv(split_csv)})
    if listed and all((root / VISA_CONVERTED / c).is_dir() for c in listed):
        return
    for category in listed:
        if not (root / category / "Data" / "Images").is_dir():
            raise DatasetError(f"VisA at {root}: {root / category / 'Data/Images'} is missing, cannot convert the "
                               f"1cls split; {info('visa').unpack}")
    with exclusive(root / ".vadbench-visa-convert.lock"):  # parallel runs of other categories wait here
        if all((root / VISA_CONVERTED / c).is_dir() for c in listed):
            return
        log.info("converting VisA at %s to the 1cls split in %s", root, root / VISA_CONVERTED)
        Visa(root=root, category=listed[0]).apply_cls1_split()
