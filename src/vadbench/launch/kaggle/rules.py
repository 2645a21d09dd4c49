"""Kaggle's own rules for what we send it, as the installed kaggle client (2.2) and the service apply them.

The client checks kernel and dataset metadata before it calls the service (kaggle_api_extended:
`kernels_push`, `dataset_create_new`, `validate_dataset_string`); the service rejects unknown
accelerators and licence names. `push` checks every folder with these rules before any upload, and
the tests' fake API applies the same rules, so a push that the fake accepts is one Kaggle would take.
"""
from __future__ import annotations

import re

from vadbench.errors import KaggleSetupError

#: Machine shapes the kaggle CLI documents for `kernels push --accelerator` (retired ones still accepted).
ACCELERATORS = ("NvidiaTeslaT4", "NvidiaTeslaP100", "NvidiaL4", "NvidiaL4X1", "NvidiaH100", "NvidiaRtxPro6000",
                "TpuV5E8", "TpuV6E8", "Tpu1VmV38", "TpuV38")
#: Licence names of Kaggle's dataset-metadata.json (Data Package `licenses[].name`).
LICENCES = ("CC0-1.0", "CC-BY-SA-4.0", "GPL-2.0", "ODbL-1.0", "CC-BY-NC-SA-4.0", "unknown", "DbCL-1.0",
            "CC-BY-SA-3.0", "copyright-authors", "other", "reddit-api", "world-bank", "CC-BY-4.0", "CC-BY-NC-4.0")
KERNEL_TYPES, LANGUAGES = ("script", "notebook"), ("python", "r", "rmarkdown")
SLUG_MAX = 50
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def slugify(text: str) -> str:
    """Kaggle's slug of a title: lowercase ASCII letters and digits joined by single hyphens."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def check_accelerator(name: str) -> None:
    """Raise unless `name` is a machine shape Kaggle knows."""
    if name not in ACCELERATORS:
        raise KaggleSetupError(f"accelerator {name!r} is not a Kaggle machine shape; use one of {list(ACCELERATORS)}")


def check_slug(slug: str, what: str, low: int = 1) -> None:
    """Raise unless slug is lowercase-hyphenated and low..50 characters long."""
    if not _SLUG.match(slug) or not low <= len(slug) <= SLUG_MAX:
        raise KaggleSetupError(f"{what} {slug!r}: Kaggle needs {low}-{SLUG_MAX} lowercase letters, digits and "
                               "single hyphens")


def check_dataset_ref(ref: str) -> None:
    """owner/slug or owner/slug/version, as the client's validate_dataset_string wants it."""
    parts = ref.split("/")
    if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and not parts[2].isdigit()):
        raise KaggleSetupError(f"dataset {ref!r}: write it as owner/dataset-slug[/version]")


def check_kernel_metadata(meta: dict) -> None:
    """kernel-metadata.json as `kaggle kernels push` checks it, plus the accelerator the service checks."""
    owner, _, slug = str(meta.get("id", "")).partition("/")
    if not owner or "/" in slug:
        raise KaggleSetupError(f"kernel id {meta.get('id')!r}: write it as owner/kernel-slug (no version)")
    check_slug(slug, "kernel slug", low=5)
    title = str(meta.get("title", ""))
    if len(title) < 5 or slugify(title) != slug:
        raise KaggleSetupError(f"kernel title {title!r} must be 5+ characters and resolve to the slug {slug!r}")
    if meta.get("kernel_type") not in KERNEL_TYPES or meta.get("language") not in LANGUAGES:
        raise KaggleSetupError(f"kernel {slug}: kernel_type must be one of {KERNEL_TYPES}, language one of {LANGUAGES}")
    if not meta.get("code_file"):
        raise KaggleSetupError(f"kernel {slug}: a code_file must be given")
    for ref in meta.get("dataset_sources", []):
        check_dataset_ref(ref)
    if meta.get("machine_shape"):
        check_accelerator(meta["machine_shape"])


def check_dataset_metadata(meta: dict) -> None:
    """dataset-metadata.json as `kaggle datasets create` checks it (slug, title, one known licence)."""
    owner, _, slug = str(meta.get("id", "")).partition("/")
    if not owner or owner == "INSERT_SLUG_HERE":
        raise KaggleSetupError(f"dataset id {meta.get('id')!r}: write it as owner/dataset-slug")
    check_slug(slug, "dataset slug", low=6)
    title = str(meta.get("title", ""))
    if not 6 <= len(title) <= SLUG_MAX:
        raise KaggleSetupError(f"dataset title {title!r}: Kaggle needs 6-50 characters")
    licences = meta.get("licenses") or []
    if len(licences) != 1 or licences[0].get("name") not in LICENCES:
        raise KaggleSetupError(f"dataset {slug}: give exactly one licence, one of {list(LICENCES)}")
