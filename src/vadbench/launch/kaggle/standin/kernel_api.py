"""The service's answers to kernel requests (kernels.KernelsApiService), as the client's requests ask them.

Rules and words, with where they come from:
- push (SaveKernel) of a new kernel: its slug is the title's slug (python-slugify, as the client computes it), not
  necessarily the id's: the client only warns "Your kernel title does not resolve to the specified id. This may
  result in surprising behavior", and Kaggle's kernel-metadata documentation says a kernel slug is always its title
  slugified. Slug 5-50 characters (5: the client; 50: vadbench.launch.kaggle.rules, the service's wording unknown).
- at most `gpu_sessions` GPU batch sessions queued or running per account; a further GPU push is refused, nothing
  saved, with "Maximum batch GPU session count of N reached" in the response's error (kaggle-cli #185 shows it as
  "Kernel push error: Maximum batch GPU session count of 4 reached"; adapter-hub/playground #4 quotes the 2).
  A session is a GPU one when its machine shape is an Nvidia one, else when enable_gpu is set (the client: the
  accelerator "overrides boolean settings for GPU/TPU found in the metadata file").
- the weekly GPU quota: hours of GPU sessions (start to end, running ones so far) are counted; a GPU push once
  they reach `quota_hours` is refused with the editor's words ("You've exceeded the number of hours allowed to use
  GPU.", Kaggle/kaggle-benchmarks #79; what the API answers to a push is not on the public record). The refresh
  time is the stand-in's start plus a week.
- dataset sources that do not exist, are private to another account, name a version that is not there or not ready,
  are left out and listed in invalidDatasetSources; the kernel is saved and runs without them (kaggle-cli #433: "The
  following are not valid dataset sources and could not be added to the kernel", then "successfully pushed").
  The stand-in has no kernels, competitions or models as sources: those are always listed as invalid.
- an unknown machine shape is refused (rules.ACCELERATORS and the client's retired ones are known; the service's
  wording is not on the public record); a session timeout above 12 h is cut to 12 h (Kaggle's session limit).
- status: kagglesdk's KernelWorkerStatus (queued, running, complete, error, cancel_requested, ...); a quick save
  (`--no-run`) is new_script (a guess: the record does not say); a version label is `v<N>`, another one 404.
- outputs: only once the session has ended (complete or error), 20 files a page with a next page token; the log
  is the service's JSON list of {stream_name, time, data}.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import nbformat
from kagglesdk.kernels.types.kernels_api_service import (
    ApiDeleteKernelRequest,
    ApiDeleteKernelResponse,
    ApiGetAcceleratorQuotaStatisticsRequest,
    ApiGetKernelRequest,
    ApiGetKernelResponse,
    ApiGetKernelSessionStatusRequest,
    ApiGetKernelSessionStatusResponse,
    ApiKernelBlob,
    ApiKernelMetadata,
    ApiKernelSessionOutputFile,
    ApiListKernelFilesItem,
    ApiListKernelFilesRequest,
    ApiListKernelFilesResponse,
    ApiListKernelSessionOutputRequest,
    ApiListKernelSessionOutputResponse,
    ApiListKernelsRequest,
    ApiListKernelsResponse,
    ApiSaveKernelRequest,
    ApiSaveKernelResponse,
)
from kagglesdk.kernels.types.kernels_enums import KernelExecutionType, KernelsListViewType, KernelWorkerStatus
from slugify import slugify

from vadbench.launch.kaggle import rules
from vadbench.launch.kaggle.standin.world import Kernel, Service, ServiceError, Session, World, denied, one_page

MAX_TIMEOUT_S = 43200
RETIRED = ("TpuV232", "TpuV2256")  # the client's retired shapes not in rules.ACCELERATORS
LANGUAGES, TYPES = ("python", "r", "rmarkdown"), ("script", "notebook")


def save_kernel(svc: Service, user: str, req: ApiSaveKernelRequest) -> ApiSaveKernelResponse:
    world = svc.world
    if req.language not in LANGUAGES or req.kernel_type not in TYPES:
        raise ServiceError(400, f"language must be one of {LANGUAGES} and kernel type one of {TYPES}")
    shape = req.machine_shape or ""
    if shape and shape not in (*rules.ACCELERATORS, *RETIRED):
        return _refused(f"Unknown machine shape {shape!r}")
    if req.kernel_type == "notebook":
        try:
            nbformat.reads(req.text or "", as_version=4)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the same answer
            return _refused(f"The notebook is not valid: {exc}")
    gpu = shape.startswith("Nvidia") if shape else bool(req.enable_gpu)
    run = req.kernel_execution_type != KernelExecutionType.QUICK_SAVE
    with world.lock:
        kernel = _target(world, user, req)
        if isinstance(kernel, str):
            return _refused(kernel)
        problem = _limits(world, user) if gpu and run else ""
        if problem:
            world.event("refused", kernel=kernel.ref, gpu=gpu, reason=problem, gpu_sessions=world.gpu_active(user))
            return _refused(problem)
        valid, invalid = _sources(world, user, list(req.dataset_data_sources))
        world.kernels.setdefault((kernel.owner, kernel.slug), kernel)
        number = len(kernel.versions) + 1
        session = Session(number, req.text or "", req.language, req.kernel_type, gpu, shape,
                          bool(req.enable_internet), min(req.session_timeout_seconds or MAX_TIMEOUT_S, MAX_TIMEOUT_S),
                          valid, world.root / "kernels" / kernel.owner / kernel.slug / f"v{number}",
                          req.docker_image_pinning_type or "", req.docker_image or "")
        if not run:
            session.status = KernelWorkerStatus.NEW_SCRIPT
        kernel.versions.append(session)
        world.event("pushed", kernel=kernel.ref, version=number, gpu=gpu, machine_shape=shape, run=run,
                    sources=valid, invalid_sources=invalid, timeout_s=session.timeout_s, pinning=session.pinning,
                    gpu_sessions=world.gpu_active(user))
    if run:
        svc.executor.submit(kernel, session)
    response = ApiSaveKernelResponse()
    response.ref, response.url, response.version_number = kernel.ref, world.url("code", kernel.ref), number
    response.kernel_id, response.invalid_dataset_sources = kernel.id, invalid
    response.invalid_kernel_sources = list(req.kernel_data_sources)
    response.invalid_competition_sources = list(req.competition_data_sources)
    response.invalid_model_sources = list(req.model_data_sources)
    return response


def _target(world: World, user: str, req: ApiSaveKernelRequest) -> Kernel | str:
    """The kernel a push versions, or the new one it creates (under the title's slug); or why it cannot be made."""
    if req.id:
        found = next((k for k in world.kernels.values() if k.id == req.id), None)
        if found is None or found.owner != user:
            raise denied("kernels.update")
        return found
    if not req.slug:
        raise ServiceError(400, "ID or slug must be specified")
    owner, _, slug = req.slug.rpartition("/")
    owner = owner or user
    if owner != user:
        raise denied("kernels.update")
    if (owner, slug) in world.kernels:
        return world.kernels[(owner, slug)]
    title = req.new_title or slug
    slug = slugify(title)
    if (owner, slug) in world.kernels:
        return world.kernels[(owner, slug)]
    if len(title) < 5 or not 5 <= len(slug) <= rules.SLUG_MAX:
        return f"The kernel title {title!r} must be at least 5 characters and its slug at most {rules.SLUG_MAX}"
    return Kernel(world.next_id(), owner, slug, title, req.is_private if req.is_private is not None else True)


def _limits(world: World, user: str) -> str:
    """Why a GPU session cannot start now: the account's session count, or its weekly quota; "" if it can."""
    if world.gpu_active(user) >= world.gpu_sessions:
        return f"Maximum batch GPU session count of {world.gpu_sessions} reached"
    if world.gpu_hours_used(user) >= world.quota_hours:
        return (f"You've exceeded the number of hours allowed to use GPU. ({world.gpu_hours_used(user):.2f} of "
                f"{world.quota_hours:g} hours used this week)")
    return ""


def _sources(world: World, user: str, refs: list[str]) -> tuple[list[str], list[str]]:
    """The dataset sources that can be attached, and those that cannot."""
    valid, invalid = [], []
    for ref in refs:
        owner, slug, *pin = ref.split("/")
        dataset = world.datasets.get((owner, slug))
        visible = dataset is not None and (not dataset.private or dataset.owner == user)
        wellformed = len(pin) == 0 or (len(pin) == 1 and pin[0].isdigit())
        found = dataset.version(int(pin[0]) if pin else None) if visible and wellformed else None
        (valid if found is not None and found.status.name == "READY" else invalid).append(ref)
    return valid, invalid


def _refused(message: str) -> ApiSaveKernelResponse:
    response = ApiSaveKernelResponse()
    response.error = message
    return response


def get_kernel_session_status(svc: Service, user: str,
                              req: ApiGetKernelSessionStatusRequest) -> ApiGetKernelSessionStatusResponse:
    session = svc.world.kernel(user, req.user_name, req.kernel_slug).version(req.version_label)
    response = ApiGetKernelSessionStatusResponse()
    response.status, response.failure_message = session.status, session.failure or None
    return response


def list_kernel_session_output(svc: Service, user: str,
                               req: ApiListKernelSessionOutputRequest) -> ApiListKernelSessionOutputResponse:
    kernel = svc.world.kernel(user, req.user_name, req.kernel_slug)
    session = kernel.version(req.version_label)
    chunk, token = one_page(session.outputs(), req.page_size or 20, req.page_token or "")
    response = ApiListKernelSessionOutputResponse()
    response.files = [_output_file(svc.world, session, rel.as_posix()) for rel in chunk]
    response.log, response.next_page_token = json.dumps(list(session.log)), token or None  # a copy: it grows
    return response


def _output_file(world: World, session: Session, rel: str) -> ApiKernelSessionOutputFile:
    item = ApiKernelSessionOutputFile()
    item.file_name = rel
    item.url = world.url("files", (session.working / rel).relative_to(world.root).as_posix())
    return item


def list_kernel_files(svc: Service, user: str, req: ApiListKernelFilesRequest) -> ApiListKernelFilesResponse:
    session = svc.world.kernel(user, req.user_name, req.kernel_slug).version(req.version_label)
    chunk, token = one_page(session.outputs(), req.page_size or 20, req.page_token or "")
    items = []
    for rel in chunk:
        item = ApiListKernelFilesItem()
        item.name, item.size = rel.as_posix(), (session.working / rel).stat().st_size
        item.creation_date = datetime.fromtimestamp(session.finished or 0, UTC).strftime("%Y-%m-%d %H:%M:%S")
        items.append(item)
    response = ApiListKernelFilesResponse()
    response.files, response.next_page_token = items, token or None
    return response


def list_kernels(svc: Service, user: str, req: ApiListKernelsRequest) -> ApiListKernelsResponse:
    with svc.world.lock:
        found = [k for k in svc.world.kernels.values() if not k.private or k.owner == user]
    if req.group == KernelsListViewType.PROFILE:
        found = [k for k in found if k.owner == user]
    if req.user:
        found = [k for k in found if k.owner == req.user]
    if req.search:
        found = [k for k in found if req.search.lower() in f"{k.slug} {k.title}".lower()]
    if req.dataset:
        found = [k for k in found if any(s.startswith(req.dataset) for s in k.versions[-1].sources)]
    chunk, token = one_page(found, req.page_size, req.page_token or "", req.page or 0, cap=100)
    response = ApiListKernelsResponse()
    response.kernels, response.next_page_token = [_metadata(k) for k in chunk], token
    return response


def _metadata(kernel: Kernel) -> ApiKernelMetadata:
    latest = kernel.versions[-1]
    meta = ApiKernelMetadata()
    meta.id, meta.ref, meta.title, meta.author, meta.slug = kernel.id, kernel.ref, kernel.title, kernel.owner, kernel.slug
    meta.language, meta.kernel_type, meta.is_private = latest.language, latest.kernel_type, kernel.private
    meta.enable_gpu, meta.enable_internet, meta.dataset_data_sources = latest.gpu, latest.internet, list(latest.sources)
    meta.current_version_number, meta.machine_shape = latest.number, latest.machine_shape or None
    meta.docker_image = latest.docker_image or None
    if latest.started is not None:
        meta.last_run_time = datetime.fromtimestamp(latest.started, UTC).replace(tzinfo=None)
    return meta


def get_kernel(svc: Service, user: str, req: ApiGetKernelRequest) -> ApiGetKernelResponse:
    kernel = svc.world.kernel(user, req.user_name, req.kernel_slug)
    session = kernel.version(req.version_label)
    blob = ApiKernelBlob()
    blob.source, blob.language, blob.kernel_type, blob.slug = session.text, session.language, session.kernel_type, \
        kernel.slug
    response = ApiGetKernelResponse()
    response.metadata, response.blob = _metadata(kernel), blob
    return response


def get_accelerator_quota_statistics(svc: Service, user: str, req: ApiGetAcceleratorQuotaStatisticsRequest) -> dict:
    """The weekly GPU quota, as JSON written here: kagglesdk's own serializer drops whole days from a timedelta
    (`timedelta.seconds`), so 30 h would reach the client as 6 h."""
    used = svc.world.gpu_hours_used(user)
    refresh = svc.world.started + timedelta(days=7)
    return {"quotaRefreshTime": refresh.isoformat(timespec="milliseconds") + "Z",
            "gpuQuota": {"timeUsed": f"{used * 3600:.3f}s", "totalTimeAllowed": f"{svc.world.quota_hours * 3600:.0f}s",
                         "hasEverRun": bool(svc.world.sessions(user))}}


def delete_kernel(svc: Service, user: str, req: ApiDeleteKernelRequest) -> ApiDeleteKernelResponse:
    kernel = svc.world.kernel(user, req.user_name, req.kernel_slug)
    if kernel.owner != user:
        raise denied("kernels.delete")
    with svc.world.lock:
        for session in kernel.versions:
            session.cancel.set()
        del svc.world.kernels[(kernel.owner, kernel.slug)]
    svc.world.event("kernel_deleted", kernel=kernel.ref)
    return ApiDeleteKernelResponse()
