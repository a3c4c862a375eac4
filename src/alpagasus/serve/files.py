"""The Files endpoint's storage for `alpagasus serve`: uploads kept in a folder, and the batch input format.

A file is two entries in the folder: `file-<hex>` (the bytes) and `file-<hex>.json` (the File object), so that
the files a server wrote stay readable by the next server started on the same folder (`--files-dir`). Only
what the Batches endpoint needs: purposes `batch` (input, validated on upload), `batch_output` (written by the
server) and `user_data` (kept as is).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

from alpagasus.errors import UserError

MAX_REQUESTS = 50_000  # the API's limits for one batch's input file
MAX_BYTES = 200 * 1024 * 1024
MAX_LINE_BYTES = 16 * 1024 * 1024  # one request line of a batch input file
ENDPOINTS = ("/v1/chat/completions",)
PURPOSES = ("batch", "batch_output", "user_data")

log = logging.getLogger("alpagasus.serve")


class ApiError(Exception):
    """An error answered as the API does: an HTTP status and {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        line: int | None = None,
    ):
        super().__init__(message)
        self.status, self.type, self.param, self.code, self.line = status, type_, param, code, line

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


def not_found(kind: str, id_: str) -> ApiError:
    return ApiError(404, f"No {kind} found with id '{id_}'.", "invalid_request_error", code="not_found")


class FileStore:
    """Files by id in one folder (created if missing); safe to use from several threads."""

    def __init__(self, folder: str | Path | None = None):
        self._lock = threading.RLock()  # delete() holds it while it reads .dir
        self._dir: Path | None = None
        self.temporary = not folder  # a folder made here (on first use) is removed by cleanup(); a given one is kept
        if folder:
            self._dir = Path(folder)
            try:
                self._dir.mkdir(parents=True, exist_ok=True)
                for stale in self._dir.glob(".*.tmp"):  # an upload or a write cut short by a crash
                    stale.unlink(missing_ok=True)
            except OSError as e:
                raise UserError(f"cannot use {self._dir} as the files folder: {e}") from None

    @property
    def dir(self) -> Path:
        with self._lock:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="alpagasus-files-"))
            return self._dir

    def cleanup(self) -> None:
        if self.temporary and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def temp_path(self) -> Path:
        """A new path in the folder for a file being written (an upload); add_file moves it into place."""
        return self.dir / f".upload-{uuid.uuid4().hex}.tmp"

    def add(self, data: bytes, filename: str, purpose: str) -> dict:
        tmp = self.temp_path()
        tmp.write_bytes(data)
        return self.add_file(tmp, filename, purpose)

    def add_file(self, tmp: Path, filename: str, purpose: str) -> dict:
        """Store the file written at `tmp` (moved into place) under a new id; its File object is written last,
        atomically: a file is listed only once complete, and its metadata is never half written."""
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": tmp.stat().st_size,
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        os.replace(tmp, self.dir / file_id)
        write_atomic(self.dir / f"{file_id}.json", json.dumps(meta).encode())
        return meta

    def _meta(self, path: Path) -> dict:
        meta = json.loads(path.read_text())
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("purpose"), str)
            or not isinstance(meta.get("created_at"), int)
        ):
            raise ValueError("not a File object")
        return meta

    def get(self, file_id: str) -> dict:
        if not file_id.startswith("file-") or "/" in file_id or not (self.dir / f"{file_id}.json").is_file():
            raise not_found("file", file_id)
        try:
            return self._meta(self.dir / f"{file_id}.json")
        except (OSError, ValueError) as e:
            log.warning("files: %s.json is damaged (%s)", file_id, e)
            raise ApiError(
                500, f"The metadata of file {file_id!r} is damaged on the server.", "server_error", code="damaged_file"
            ) from None

    def path(self, file_id: str) -> Path:
        """Where the bytes of a stored file are (404 for an unknown id)."""
        self.get(file_id)
        return self.dir / file_id

    def content(self, file_id: str) -> bytes:
        return self.path(file_id).read_bytes()

    def delete(self, file_id: str) -> dict:
        if not file_id.startswith("file-") or "/" in file_id or not (self.dir / f"{file_id}.json").exists():
            raise not_found("file", file_id)
        with self._lock:
            (self.dir / f"{file_id}.json").unlink(missing_ok=True)
            (self.dir / file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self, purpose: str | None = None) -> dict:
        """Every file, newest first; a file whose metadata cannot be read is left out (and logged), so that one
        damaged entry does not hide the others."""
        metas = []
        for p in self.dir.glob("file-*.json"):
            try:
                metas.append(self._meta(p))
            except (OSError, ValueError) as e:
                log.warning("files: skipping %s, its metadata is damaged (%s)", p.name, e)
        metas = sorted((m for m in metas if purpose in (None, m["purpose"])), key=lambda m: -m["created_at"])
        return {"object": "list", "data": metas, "has_more": False}


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` at `path` through a temporary file and os.replace: readers see the old or the new bytes."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _bad_line(where: str, n: int, msg: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, f"{where}line {n}: {msg}", param=param, code=code, line=n)


def iter_requests(stream: BinaryIO, endpoint: str | None = None, source: str = "") -> Iterator[dict]:
    """The request lines of a batch input file, each {custom_id, method, url, body}, read line by line (memory
    does not grow with the file); the first fault found is an ApiError(400) naming the file (`source`), its line
    (1-based) and field. Lines end at b"\\n" only: U+2028 and other Unicode line breaks are text inside a line.
    With `endpoint`, every url must be that endpoint."""
    where = f"{source}, " if source else ""
    seen: set[str] = set()
    allowed = (endpoint,) if endpoint else ENDPOINTS
    n = 0
    while raw := stream.readline(MAX_LINE_BYTES + 1):
        n += 1
        bad = functools.partial(_bad_line, where, n)
        if len(raw) > MAX_LINE_BYTES:
            raise bad(f"longer than {MAX_LINE_BYTES} bytes", code="line_too_long")
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except UnicodeDecodeError:
            raise bad("not valid UTF-8", code="invalid_json") from None
        except json.JSONDecodeError as e:
            raise bad(f"not valid JSON ({e.msg})", code="invalid_json") from None
        except RecursionError:
            raise bad("not valid JSON (nested too deeply)", code="invalid_json") from None
        if not isinstance(line, dict):
            raise bad("a request is a JSON object")
        cid = line.get("custom_id")
        if not isinstance(cid, str) or not cid:
            raise bad("field 'custom_id' must be a non-empty string", "custom_id", "missing_required_parameter")
        if cid in seen:
            raise bad(f"custom_id {cid!r} is used twice; each must be unique", "custom_id", "duplicate_custom_id")
        if line.get("method") != "POST":
            raise bad("field 'method' must be \"POST\"", "method", "invalid_method")
        if line.get("url") not in allowed:
            raise bad(f"field 'url' is {line.get('url')!r}, expected {' or '.join(allowed)}", "url", "invalid_url")
        if not isinstance(line.get("body"), dict):
            raise bad("field 'body' must be a JSON object", "body", "invalid_body")
        seen.add(cid)
        if len(seen) > MAX_REQUESTS:
            raise ApiError(
                400,
                f"The file holds more than {MAX_REQUESTS} requests, the most a batch holds.",
                code="too_many_requests",
            )
        yield line
    if not seen:
        raise ApiError(400, "The batch input file holds no requests.", code="empty_file")


def count_requests(path: Path, endpoint: str | None = None, source: str = "") -> int:
    """Validate a batch input file on disk line by line (see iter_requests); its number of requests."""
    with open(path, "rb") as f:
        return sum(1 for _ in iter_requests(f, endpoint, source))


def read_requests(data: bytes, endpoint: str | None = None, source: str = "") -> list[dict]:
    """iter_requests over bytes in memory, as a list."""
    import io

    return list(iter_requests(io.BytesIO(data), endpoint, source))
