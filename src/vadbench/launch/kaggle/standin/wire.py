"""The stand-in at the wire: kagglesdk's HTTP protocol, as kaggle_http_client.py speaks it.

Every call is `POST /api/v1/<service>/<Method>` with the request type's JSON (kagglesdk `to_dict`: camelCase keys);
a field the request type does not have is refused (400), so a client/service mismatch shows. Answers are the
response type's JSON; errors are `{"code": N, "message": ...}` with that HTTP status, which the client raises as
an HTTPError carrying the message. Credentials: the legacy API key as HTTP Basic (KAGGLE_USERNAME/KAGGLE_KEY or
kaggle.json; any key is taken and the user name is the account); a Bearer access token is not known here (token
introspection answers "inactive", so the client falls back to the key). Requests arrive as `/api/v1/...` (kagglesdk
with KAGGLE_API_ENVIRONMENT=TEST at localhost:7777) or in a proxy's absolute form `http://localhost/api/v1/...` (the
kaggle client with KAGGLE_API_ENVIRONMENT=LOCALHOST and `http_proxy` set here); a request for any other host, and
any CONNECT (an https call to the real service), is refused. Besides the RPCs: `PUT /upload/<token>` (uploads),
`GET /files/<path>` (outputs and dataset downloads, unauthenticated like the service's signed URLs) and the
client's log stream `GET /api/v1/kernels/logs/stream/<owner>/<slug>` (`kaggle kernels logs -f`). An RPC the
stand-in does not implement answers 501 naming it.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from kagglesdk.blobs.types.blob_api_service import ApiStartBlobUploadRequest
from kagglesdk.datasets.types import dataset_api_service as ds
from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus
from kagglesdk.kaggle_object import KaggleObject
from kagglesdk.kernels.types import kernels_api_service as ks
from kagglesdk.security.types.oauth_service import IntrospectTokenResponse

from vadbench.errors import KaggleSetupError
from vadbench.launch.kaggle.standin import dataset_api, kernel_api
from vadbench.launch.kaggle.standin.blobs import Blobs
from vadbench.launch.kaggle.standin.executor import Executor
from vadbench.launch.kaggle.standin.world import (
    ACTIVE,
    Dataset,
    DatasetVersion,
    Redirect,
    ServiceError,
    Session,
    World,
)

log = logging.getLogger(__name__)
KERNELS, DATASETS = "kernels.KernelsApiService", "datasets.DatasetApiService"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
Handler = Callable[[Any, str, Any], Any]
ROUTES: dict[tuple[str, str], tuple[type[KaggleObject], Handler]] = {
    (KERNELS, "SaveKernel"): (ks.ApiSaveKernelRequest, kernel_api.save_kernel),
    (KERNELS, "GetKernelSessionStatus"): (ks.ApiGetKernelSessionStatusRequest, kernel_api.get_kernel_session_status),
    (KERNELS, "ListKernelSessionOutput"): (ks.ApiListKernelSessionOutputRequest, kernel_api.list_kernel_session_output),
    (KERNELS, "ListKernelFiles"): (ks.ApiListKernelFilesRequest, kernel_api.list_kernel_files),
    (KERNELS, "ListKernels"): (ks.ApiListKernelsRequest, kernel_api.list_kernels),
    (KERNELS, "GetKernel"): (ks.ApiGetKernelRequest, kernel_api.get_kernel),
    (KERNELS, "DeleteKernel"): (ks.ApiDeleteKernelRequest, kernel_api.delete_kernel),
    (KERNELS, "GetAcceleratorQuotaStatistics"): (ks.ApiGetAcceleratorQuotaStatisticsRequest,
                                                 kernel_api.get_accelerator_quota_statistics),
    ("blobs.BlobApiService", "StartBlobUpload"): (ApiStartBlobUploadRequest, lambda svc, user, req: svc.blobs.start(req)),
    (DATASETS, "CreateDataset"): (ds.ApiCreateDatasetRequest, dataset_api.create_dataset),
    (DATASETS, "CreateDatasetVersion"): (ds.ApiCreateDatasetVersionRequest, dataset_api.create_dataset_version),
    (DATASETS, "CreateDatasetVersionById"): (ds.ApiCreateDatasetVersionByIdRequest,
                                             dataset_api.create_dataset_version_by_id),
    (DATASETS, "GetDatasetStatus"): (ds.ApiGetDatasetStatusRequest, dataset_api.get_dataset_status),
    (DATASETS, "GetDataset"): (ds.ApiGetDatasetRequest, dataset_api.get_dataset),
    (DATASETS, "GetDatasetMetadata"): (ds.ApiGetDatasetMetadataRequest, dataset_api.get_dataset_metadata),
    (DATASETS, "ListDatasets"): (ds.ApiListDatasetsRequest, dataset_api.list_datasets),
    (DATASETS, "ListDatasetFiles"): (ds.ApiListDatasetFilesRequest, dataset_api.list_dataset_files),
    (DATASETS, "DownloadDataset"): (ds.ApiDownloadDatasetRequest, dataset_api.download_dataset),
    (DATASETS, "DeleteDataset"): (ds.ApiDeleteDatasetRequest, dataset_api.delete_dataset),
}
NO_AUTH = {("security.OAuthService", "IntrospectToken")}


def client_env(port: int) -> dict[str, str]:
    """The environment that points the unpatched `kaggle` client (and kagglesdk) at a stand-in on this port."""
    url = f"http://127.0.0.1:{port}"
    return {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "http_proxy": url, "HTTP_PROXY": url, "https_proxy": url,
            "HTTPS_PROXY": url, "no_proxy": "", "NO_PROXY": ""}


class Standin:
    """The service: state, uploads, sessions and the HTTP server on `host:port` (0: a free port)."""

    def __init__(self, state_dir: Path | str, port: int = 7777, host: str = "127.0.0.1",
                 datasets: dict[str, Path] | None = None, gpu_sessions: int = 2, quota_hours: float = 30.0,
                 log_path: Path | str | None = None, processing_s: float = 2.0, queue_s: float = 1.0) -> None:
        root = Path(state_dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        self.server = ThreadingHTTPServer((host, port), _Handler)
        self.server.daemon_threads = True
        self.server.standin = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.world = World(root, gpu_sessions, quota_hours, Path(log_path) if log_path else None,
                           f"http://127.0.0.1:{self.port}")
        self.blobs = Blobs(root / "blobs", self.world.url)
        self.executor = Executor(self.world, queue_s)
        self.processing_s = processing_s
        for ref, folder in (datasets or {}).items():
            self.add_dataset(ref, Path(folder))
        self._thread: threading.Thread | None = None

    def add_dataset(self, ref: str, folder: Path) -> None:
        """A public, ready dataset `owner/slug` whose files are `folder` (mounted as it is, read-only)."""
        owner, _, slug = ref.partition("/")
        if not owner or not slug or "/" in slug:
            raise KaggleSetupError(f"--dataset {ref}: write it as owner/slug=DIR")
        if not folder.is_dir():
            raise KaggleSetupError(f"--dataset {ref}={folder}: no such folder")
        dataset = Dataset(self.world.next_id(), owner, slug, slug, "other", private=False)
        dataset.versions.append(DatasetVersion(1, folder.resolve(), "given with --dataset"))
        dataset.versions[0].status = DatabundleVersionStatus.READY
        self.world.datasets[(owner, slug)] = dataset
        self.world.event("dataset_given", dataset=ref, folder=str(folder.resolve()))

    def start(self) -> Standin:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="standin http")
        self._thread.start()
        self.world.event("serving", port=self.port, gpu_sessions=self.world.gpu_sessions,
                         quota_hours=self.world.quota_hours)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.executor.stop()
        self.world.event("stopped")

    def __enter__(self) -> Standin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(standin: Standin, out: Any = None) -> None:
    """Serve until Ctrl-C or SIGTERM, after writing the lines that point a shell's `kaggle` client here."""
    import signal
    import sys

    env = {**client_env(standin.port), "KAGGLE_USERNAME": "<any name>", "KAGGLE_KEY": "<any key>"}
    lines = "\n".join(f"export {k}={v!r}" if "<" in v else f"export {k}={v}" for k, v in env.items())
    (out or sys.stdout).write(f"Kaggle stand-in on port {standin.port}; in the shell that runs kaggle or vadbench:\n"
                              f"{lines}\n")
    (out or sys.stdout).flush()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    standin.start()
    try:
        while not stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vadbench-kaggle-standin"

    @property
    def svc(self) -> Standin:
        return self.server.standin  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    def _target(self) -> tuple[str, dict[str, list[str]]] | None:
        """The request's path and query, from origin or absolute form; None for a host that is not this machine."""
        parts = urlsplit(self.path)
        if parts.scheme and parts.hostname not in LOCAL_HOSTS:
            return None
        return unquote(parts.path), parse_qs(parts.query)

    def do_CONNECT(self) -> None:
        self.close_connection = True
        self._json(403, {"code": 403, "message": f"the Kaggle stand-in does not forward {self.path}: set "
                                                 "KAGGLE_API_ENVIRONMENT=LOCALHOST to call the stand-in"})

    def do_POST(self) -> None:
        body = b"".join(self._chunks())
        target = self._target()
        if target is None or not target[0].startswith("/api/v1/") or target[0].count("/") != 4:
            return self._error(ServiceError(404, f"no such endpoint: POST {self.path}"))
        _, _, _, service, method = target[0].split("/")
        try:
            self._answer(self._rpc(service, method, body))
        except ServiceError as exc:
            self._error(exc)

    def _rpc(self, service: str, method: str, body: bytes) -> Any:
        if (service, method) in NO_AUTH:
            response = IntrospectTokenResponse()  # no access token is known here: the client uses the API key
            response.active = False
            return response
        route = ROUTES.get((service, method))
        if route is None:
            raise ServiceError(501, f"{service}/{method} is not implemented by the vadbench Kaggle stand-in")
        request_type, handler = route
        try:
            fields = json.loads(body or b"{}")
            unknown = sorted(set(fields) - {f.json_name for f in request_type._fields})
            if unknown:
                raise ServiceError(400, f"{request_type.__name__} has no field(s) {unknown}")
            request = request_type.from_dict(fields)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ServiceError(400, f"Invalid {request_type.__name__}: {exc}") from exc
        user = self._user()
        if user is None:
            raise ServiceError(401, "Unauthenticated: give a user name and API key (KAGGLE_USERNAME, KAGGLE_KEY)")
        return handler(self.svc, user, request)

    def _user(self) -> str | None:
        kind, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if kind != "Basic":
            return None
        try:
            name, _, key = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return name if name and key else None

    def do_GET(self) -> None:
        target = self._target()
        path = target[0] if target else ""
        if path.startswith("/files/"):
            return self._file(path[len("/files/"):])
        if path.startswith("/api/v1/kernels/logs/stream/") and path.count("/") == 7:
            owner, slug = path.split("/")[-2:]
            user = self._user()
            try:
                if user is None:
                    raise ServiceError(401, "Unauthenticated")
                kernel = self.svc.world.kernel(user, owner, slug)
                session = kernel.version((target[1].get("versionLabel") or [""])[0] if target else "")
            except ServiceError as exc:
                return self._error(exc)
            return self._log_stream(session)
        self._error(ServiceError(404, f"no such endpoint: GET {self.path}"))

    def _log_stream(self, session: Session) -> None:
        """A session's log: while it is queued or running, server-sent events until it ends (then the client's
        END_OF_LOG sentinel); after, the stored log as one JSON list (the client reads either)."""
        if session.status not in ACTIVE:
            return self._json(200, list(session.log))
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        while True:
            ended = session.status not in ACTIVE
            entries = list(session.log)
            for entry in entries[sent:]:
                self.wfile.write(f"data: {json.dumps(entry)}\n\n".encode())
            self.wfile.flush()
            sent = len(entries)
            if ended:
                break
            time.sleep(0.3)
        self.wfile.write(b"data: END_OF_LOG\n\n")

    def _file(self, rel: str) -> None:
        root = self.svc.world.root
        path = (root / rel).resolve()
        inside = path.is_relative_to(root / "downloads") or (path.is_relative_to(root / "kernels") and
                                                             "working" in path.relative_to(root).parts)
        if not inside or not path.is_file():
            return self._error(ServiceError(404, f"no such file: {rel}"))
        stat = path.stat()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(stat.st_size))
        self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))
        self.end_headers()
        with path.open("rb") as src:
            while chunk := src.read(1 << 20):
                self.wfile.write(chunk)

    def do_PUT(self) -> None:
        target = self._target()
        if target is None or not target[0].startswith("/upload/"):
            self.close_connection = True
            return self._error(ServiceError(404, f"no such endpoint: PUT {self.path}"))
        token = target[0][len("/upload/"):]
        if token not in self.svc.blobs.blobs:
            self.close_connection = True
            return self._json(404, {"code": 404, "message": "upload expired or unknown"})
        status, headers = self.svc.blobs.put(token, self.headers.get("Content-Range"), self._chunks())
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _chunks(self) -> Iterator[bytes]:
        """The request body, whether sized or chunked."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk

    def _answer(self, result: Any) -> None:
        if isinstance(result, Redirect):
            self.send_response(302)
            self.send_header("Location", result.url)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif isinstance(result, dict):
            self._json(200, result)
        else:
            self._json(200, result.to_dict())

    def _error(self, exc: ServiceError) -> None:
        if exc.code >= 500 or exc.code in (400, 404):
            log.warning("%s %s: %d %s", self.command, self.path, exc.code, exc.message)
        self._json(exc.code, {"code": exc.code, "message": exc.message})

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
