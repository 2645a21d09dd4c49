"""The service's answers to dataset requests (datasets.DatasetApiService), as the client's requests ask them.

Rules and words, with where they come from:
- create: the owner must be the caller ("You are not allowed to create a dataset as this owner.", kaggle-cli #25);
  slug 6-50 lowercase letters, digits and hyphens (the client checks the length; a slug with spaces gets
  400 Bad Request, kaggle-cli #381; the character set is vadbench.launch.kaggle.rules'); title 6-50 characters
  (the client's own check, repeated); one licence of Kaggle's names (rules.LICENCES; the service's wording for an
  unknown one is not on the public record); a slug or title already in use is refused in the client's and the
  service's words (kaggle_api_extended `dataset_create_new`, kaggle-cli #424); no file at all: "Please specify at
  least one file." (kaggle-cli #89), which is what `--dir-mode skip` on a folder of sub-folders sends; two files of
  one name: "Path must be unique" (kaggle-cli #416).
- a new version of a dataset that is not the caller's (or unknown): 403 'datasets.update' (kaggle-cli #642).
- processing: a version goes blobs_received -> blobs_decompressed -> ready, or failed when an uploaded archive does
  not unpack (the client reads the state as `DatabundleVersionStatus.name.lower()`). Archives (zip, tar, tar.gz)
  are unpacked into a folder named after the archive, which is how `--dir-mode zip` folders come back as folders;
  other files are kept as they are. The unpacking rule for an archive uploaded as a file, and how long processing
  takes on the service, are not on the public record; here it takes `--processing-s`.
- `current_version_number` is the newest ready version; status is the newest version's.
"""
from __future__ import annotations

import re
import shutil
import tarfile
import threading
import time
import zipfile
from pathlib import Path

from kagglesdk.datasets.types.dataset_api_service import (
    ApiCreateDatasetRequest,
    ApiCreateDatasetResponse,
    ApiCreateDatasetVersionByIdRequest,
    ApiCreateDatasetVersionRequest,
    ApiDataset,
    ApiDatasetFile,
    ApiDatasetVersion,
    ApiDeleteDatasetRequest,
    ApiDeleteDatasetResponse,
    ApiDownloadDatasetRequest,
    ApiGetDatasetMetadataRequest,
    ApiGetDatasetMetadataResponse,
    ApiGetDatasetRequest,
    ApiGetDatasetStatusRequest,
    ApiGetDatasetStatusResponse,
    ApiListDatasetFilesRequest,
    ApiListDatasetFilesResponse,
    ApiListDatasetsRequest,
    ApiListDatasetsResponse,
)
from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus, DatasetSelectionGroup
from kagglesdk.datasets.types.dataset_types import DatasetInfo, SettingsLicense

from vadbench.launch.kaggle import rules
from vadbench.launch.kaggle.standin.world import Dataset, DatasetVersion, Redirect, Service, ServiceError, one_page

_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")


def create_dataset(svc: Service, user: str, req: ApiCreateDatasetRequest) -> ApiCreateDatasetResponse:
    if req.owner_slug != user:
        return _refused("You are not allowed to create a dataset as this owner.")
    if not _SLUG.match(req.slug or "") or not 6 <= len(req.slug) <= 50:
        raise ServiceError(400, f"Invalid dataset slug {req.slug!r}: 6-50 lowercase letters, digits and hyphens")
    if not 6 <= len(req.title or "") <= 50:
        return _refused("The dataset title must be between 6 and 50 characters")
    if req.license_name not in rules.LICENCES:
        return _refused(f"The license {req.license_name!r} is not a valid license")
    world = svc.world
    with world.lock:
        mine = [d for d in world.datasets.values() if d.owner == user]
        if (user, req.slug) in world.datasets:
            return _refused(f'The requested slug "{req.slug}" is already in use by a dataset. Please choose another '
                            "slug.")
        if any(d.title == req.title for d in mine):
            return _refused(f'The requested title "{req.title}" is already in use by a dataset. Please choose another '
                            "title.")
        blobs, problem = _blobs_of(svc, [f.token for f in req.files])
        if problem:
            return _refused(problem)
        dataset = Dataset(world.next_id(), user, req.slug, req.title, req.license_name, req.is_private,
                          req.subtitle or "", req.description or "", list(req.category_ids))
        world.datasets[(user, req.slug)] = dataset
        version = _new_version(svc, dataset, "", blobs)
    world.event("dataset_created", dataset=dataset.ref, version=version.number, files=[b.name for b in blobs])
    return _accepted(svc, dataset)


def create_dataset_version(svc: Service, user: str, req: ApiCreateDatasetVersionRequest) -> ApiCreateDatasetResponse:
    return _version(svc, svc.world.own_dataset(user, req.owner_slug, req.dataset_slug), req.body)


def create_dataset_version_by_id(svc: Service, user: str,
                                 req: ApiCreateDatasetVersionByIdRequest) -> ApiCreateDatasetResponse:
    found = next((d for d in svc.world.datasets.values() if d.id == req.id), None)
    return _version(svc, svc.world.own_dataset(user, found.owner if found else "", found.slug if found else ""),
                    req.body)


def _version(svc: Service, dataset: Dataset, body) -> ApiCreateDatasetResponse:
    with svc.world.lock:
        blobs, problem = _blobs_of(svc, [f.token for f in body.files])
        if problem:
            return _refused(problem)
        version = _new_version(svc, dataset, body.version_notes or "", blobs, body.delete_old_versions)
    svc.world.event("dataset_versioned", dataset=dataset.ref, version=version.number, files=[b.name for b in blobs])
    return _accepted(svc, dataset)


def _blobs_of(svc: Service, tokens: list[str]) -> tuple[list, str]:
    if not tokens:
        return [], "Please specify at least one file."
    blobs = [svc.blobs.take(t) for t in tokens]
    names = [b.name for b in blobs]
    return blobs, "Path must be unique" if len(set(names)) != len(names) else ""


def _new_version(svc: Service, dataset: Dataset, notes: str, blobs: list, delete_old: bool = False) -> DatasetVersion:
    number = len(dataset.versions) + 1
    folder = svc.world.root / "datasets" / dataset.owner / dataset.slug / f"v{number}"
    version = DatasetVersion(number, folder, notes)
    dataset.versions.append(version)
    threading.Thread(target=_process, args=(svc, dataset, version, blobs, delete_old), daemon=True,
                     name=f"dataset {dataset.ref} v{number}").start()
    return version


def _process(svc: Service, dataset: Dataset, version: DatasetVersion, blobs: list, delete_old: bool) -> None:
    """Unpack the uploaded files into the version's folder; ready, or failed with the reason."""
    time.sleep(svc.processing_s / 2)
    try:
        if version.folder.exists():
            shutil.rmtree(version.folder)
        version.folder.mkdir(parents=True)
        for blob in blobs:
            unpack(blob.path, blob.name, version.folder)
        version.status = DatabundleVersionStatus.BLOBS_DECOMPRESSED
        time.sleep(svc.processing_s / 2)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, ValueError) as exc:
        version.status, version.error = DatabundleVersionStatus.FAILED, f"{type(exc).__name__}: {exc}"
        svc.world.event("dataset_failed", dataset=dataset.ref, version=version.number, error=version.error)
        return
    with svc.world.lock:
        version.status = DatabundleVersionStatus.READY
        if delete_old:
            for old in dataset.versions[:-1]:
                old.status = DatabundleVersionStatus.DELETED
    svc.world.event("dataset_ready", dataset=dataset.ref, version=version.number)


def unpack(path: Path, name: str, folder: Path) -> None:
    """An uploaded file into the version folder: archives unpacked into a folder of their stem, others kept."""
    suffix = next((s for s in _ARCHIVES if name.endswith(s)), None)
    if suffix is None:
        shutil.copy2(path, folder / name)
        return
    target = folder / name[: -len(suffix)]
    if suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"{name}: member {bad} is corrupt")
            for member in archive.namelist():
                if Path(member).is_absolute() or ".." in Path(member).parts:
                    raise ValueError(f"{name}: member {member} points outside the archive")
            archive.extractall(target)
    else:
        with tarfile.open(path) as archive:
            archive.extractall(target, filter="data")


def _refused(message: str) -> ApiCreateDatasetResponse:
    response = ApiCreateDatasetResponse()
    response.status, response.error = "error", message
    return response


def _accepted(svc: Service, dataset: Dataset) -> ApiCreateDatasetResponse:
    response = ApiCreateDatasetResponse()
    response.status, response.ref, response.url = "ok", dataset.ref, svc.world.url("datasets", dataset.ref)
    return response


def get_dataset_status(svc: Service, user: str, req: ApiGetDatasetStatusRequest) -> ApiGetDatasetStatusResponse:
    dataset = svc.world.dataset(user, req.owner_slug, req.dataset_slug)
    response = ApiGetDatasetStatusResponse()
    live = [v for v in dataset.versions if v.status != DatabundleVersionStatus.DELETED]
    response.status = live[-1].status if live else DatabundleVersionStatus.DELETED
    return response


def get_dataset(svc: Service, user: str, req: ApiGetDatasetRequest) -> ApiDataset:
    return describe_dataset(svc, svc.world.dataset(user, req.owner_slug, req.dataset_slug))


def describe_dataset(svc: Service, dataset: Dataset) -> ApiDataset:
    """A dataset as the list and get calls answer it."""
    out = ApiDataset()
    current = dataset.current()
    out.id, out.ref, out.title, out.subtitle = dataset.id, dataset.ref, dataset.title, dataset.subtitle
    out.owner_name = out.owner_ref = out.creator_name = dataset.owner
    out.url, out.is_private, out.license_name = svc.world.url("datasets", dataset.ref), dataset.private, dataset.licence
    out.current_version_number = current.number if current else None
    out.total_bytes = sum(p.stat().st_size for p in _files(current)) if current else 0
    out.last_updated = dataset.versions[-1].created
    out.versions = [_version_info(v) for v in reversed(dataset.versions)]
    return out


def _version_info(version: DatasetVersion) -> ApiDatasetVersion:
    info = ApiDatasetVersion()
    info.version_number, info.creation_date = version.number, version.created
    info.version_notes, info.status = version.notes, version.status.name.lower()
    return info


def _files(version: DatasetVersion) -> list[Path]:
    return sorted(p for p in version.folder.rglob("*") if p.is_file())


def get_dataset_metadata(svc: Service, user: str, req: ApiGetDatasetMetadataRequest) -> ApiGetDatasetMetadataResponse:
    dataset = svc.world.dataset(user, req.owner_slug, req.dataset_slug)
    info = DatasetInfo()
    info.dataset_id, info.dataset_slug, info.owner_user = dataset.id, dataset.slug, dataset.owner
    info.title, info.subtitle, info.description = dataset.title, dataset.subtitle, dataset.description
    info.is_private, info.keywords = dataset.private, list(dataset.keywords)
    licence = SettingsLicense()
    licence.name = dataset.licence
    info.licenses = [licence]
    response = ApiGetDatasetMetadataResponse()
    response.info = info
    return response


def list_datasets(svc: Service, user: str, req: ApiListDatasetsRequest) -> ApiListDatasetsResponse:
    group = req.group
    with svc.world.lock:
        found = [d for d in svc.world.datasets.values() if not d.private or d.owner == user]
    if group == DatasetSelectionGroup.DATASET_SELECTION_GROUP_MY:
        found = [d for d in found if d.owner == user]
    elif group == DatasetSelectionGroup.DATASET_SELECTION_GROUP_USER or req.user:
        found = [d for d in found if d.owner == req.user]
    if req.search:
        found = [d for d in found if req.search.lower() in f"{d.slug} {d.title}".lower()]
    chunk, token = one_page(found, req.page_size, req.page_token or "", req.page or 0)
    response = ApiListDatasetsResponse()
    response.datasets, response.next_page_token = [describe_dataset(svc, d) for d in chunk], token
    return response


def list_dataset_files(svc: Service, user: str, req: ApiListDatasetFilesRequest) -> ApiListDatasetFilesResponse:
    dataset = svc.world.dataset(user, req.owner_slug, req.dataset_slug)
    version = dataset.version(req.dataset_version_number)
    response = ApiListDatasetFilesResponse()
    if version is None or version.status != DatabundleVersionStatus.READY:
        response.error_message = f"Dataset {dataset.ref} has no ready version {req.dataset_version_number or ''}"
        return response
    chunk, response.next_page_token = one_page(_files(version), req.page_size, req.page_token or "", cap=200)
    response.dataset_files = [_file_info(dataset, version, p) for p in chunk]
    return response


def _file_info(dataset: Dataset, version: DatasetVersion, path: Path) -> ApiDatasetFile:
    info = ApiDatasetFile()
    info.ref = info.name = path.relative_to(version.folder).as_posix()
    info.dataset_ref, info.owner_ref = dataset.ref, dataset.owner
    info.total_bytes, info.creation_date = path.stat().st_size, version.created
    return info


def download_dataset(svc: Service, user: str, req: ApiDownloadDatasetRequest) -> Redirect:
    """All files of a version as one zip (what the client saves as <slug>.zip); one file is not implemented."""
    dataset = svc.world.dataset(user, req.owner_slug, req.dataset_slug)
    if req.file_name:
        raise ServiceError(501, "downloading one file of a dataset is not implemented by the stand-in; "
                                "download the whole dataset")
    version = dataset.version(req.dataset_version_number)
    if version is None:
        raise ServiceError(404, f"Dataset {dataset.ref} has no ready version {req.dataset_version_number or ''}")
    rel = Path("downloads") / dataset.owner / dataset.slug / f"v{version.number}.zip"
    target = svc.world.root / rel
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.make_archive(str(target.with_suffix("")), "zip", version.folder)
    return Redirect(svc.world.url("files", rel.as_posix()))


def delete_dataset(svc: Service, user: str, req: ApiDeleteDatasetRequest) -> ApiDeleteDatasetResponse:
    dataset = svc.world.own_dataset(user, req.owner_slug, req.dataset_slug)
    with svc.world.lock:
        del svc.world.datasets[(dataset.owner, dataset.slug)]
    svc.world.event("dataset_deleted", dataset=dataset.ref)
    return ApiDeleteDatasetResponse()
