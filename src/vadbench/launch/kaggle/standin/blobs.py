"""The client's upload protocol for dataset files (kaggle_api_extended `_upload_blob`, `upload_complete`).

`StartBlobUpload` (blobs.BlobApiService) answers a token and an upload URL; the client PUTs the file's bytes to the
URL with a plain `requests` session, whole, or resumed the way Google Cloud Storage's resumable uploads work (the
client's own reference): `Content-Range: bytes */N` asks how much arrived (200: complete, 308 with
`Range: bytes=0-K`: incomplete, 404: expired), `bytes a-b/N` sends the rest. 200 or 201 is success for the client,
503 makes it retry. A dataset version then names the tokens of complete uploads.
"""
from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kagglesdk.blobs.types.blob_api_service import ApiBlobType, ApiStartBlobUploadRequest, ApiStartBlobUploadResponse

from vadbench.launch.kaggle.standin.world import ServiceError

_RANGE = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+)$")


@dataclass
class Blob:
    """One upload: the file name the client gave, its announced length, the bytes received so far."""

    token: str
    name: str
    length: int
    path: Path
    received: int = 0

    @property
    def complete(self) -> bool:
        return self.received == self.length


class Blobs:
    """Uploads in progress and done, stored as files under `root`."""

    def __init__(self, root: Path, url: Callable[[str], str]) -> None:
        self.root, self.url = root, url
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs: dict[str, Blob] = {}
        self.lock = threading.Lock()

    def start(self, request: ApiStartBlobUploadRequest) -> ApiStartBlobUploadResponse:
        """A token and an upload URL for one file of a dataset."""
        if request.type != ApiBlobType.DATASET:
            raise ServiceError(501, f"uploads of type {request.type.name} are not implemented by the stand-in "
                                    "(datasets only)")
        if not request.name or "/" in request.name or request.name in (".", ".."):
            raise ServiceError(400, f"Invalid file name {request.name!r}")
        if request.content_length < 0:
            raise ServiceError(400, "contentLength must not be negative")
        token = secrets.token_hex(16)
        with self.lock:
            self.blobs[token] = Blob(token, request.name, request.content_length, self.root / token)
        response = ApiStartBlobUploadResponse()
        response.token, response.create_url = token, self.url(f"upload/{token}")
        return response

    def put(self, token: str, content_range: str | None, chunks: Iterable[bytes]) -> tuple[int, dict[str, str]]:
        """Store a PUT's bytes; (HTTP status, headers) as a resumable upload answers."""
        blob = self.blobs.get(token)
        if blob is None:
            return 404, {}
        start = 0
        if content_range:
            match = _RANGE.match(content_range.strip())
            if match is None or int(match.group(3)) != blob.length:
                return 400, {}
            if match.group(1) is None:  # a status query: how much arrived
                return self._answer(blob)
            start = int(match.group(1))
            if start > blob.received:
                return self._answer(blob)  # a gap: the client resends from what the Range header says
        with blob.path.open("r+b" if blob.path.exists() else "wb") as out:
            out.seek(start)
            out.truncate()
            for chunk in chunks:
                out.write(chunk)
            received = out.tell()
        if received > blob.length:
            blob.path.unlink()
            blob.received = 0
            return 400, {}
        blob.received = received
        return self._answer(blob)

    @staticmethod
    def _answer(blob: Blob) -> tuple[int, dict[str, str]]:
        if blob.complete:
            return 200, {}
        return 308, ({"Range": f"bytes=0-{blob.received - 1}"} if blob.received else {})

    def take(self, token: str) -> Blob:
        """A complete upload named by a dataset version (400 for an unknown token or an incomplete upload)."""
        blob = self.blobs.get(token)
        if blob is None or not blob.complete:
            raise ServiceError(400, f"Invalid file token {token!r}: no complete upload has it")
        return blob
