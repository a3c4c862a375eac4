"""The Files endpoint's storage for `alpagasus serve`: uploads kept in a folder, and the batch input format.

A file is two entries in the folder: `file-<hex>` (the bytes) and `file-<hex>.json` (the File object), so that
the files a server wrote stay readable by the next server started on the same folder (`--files-dir`). Only
what the Batches endpoint needs: purposes `batch` (input, validated on upload), `batch_output` (written by the
server) and `user_data` (kept as is).
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

from alpagasus.errors import UserError

MAX_REQUESTS = 50_000            # the API's limits for one batch's input file
MAX_BYTES = 200 * 1024 * 1024
ENDPOINTS = ("/v1/chat/completions",)
PURPOSES = ("batch", "batch_output", "user_data")


class ApiError(Exception):
    """An error answered as the API does: an HTTP status and {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, line: int | None = None):
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

    def add(self, data: bytes, filename: str, purpose: str) -> dict:
        meta = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(data),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed",
                "expires_at": None, "status_details": None}
        path = self.dir / meta["id"]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        (self.dir / f"{meta['id']}.json").write_text(json.dumps(meta))  # written last: the file is complete
        return meta

    def get(self, file_id: str) -> dict:
        if not file_id.startswith("file-") or "/" in file_id or not (self.dir / f"{file_id}.json").is_file():
            raise not_found("file", file_id)
        return json.loads((self.dir / f"{file_id}.json").read_text())

    def content(self, file_id: str) -> bytes:
        self.get(file_id)
        return (self.dir / file_id).read_bytes()

    def delete(self, file_id: str) -> dict:
        self.get(file_id)
        with self._lock:
            (self.dir / f"{file_id}.json").unlink(missing_ok=True)
            (self.dir / file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self, purpose: str | None = None) -> dict:
        metas = [json.loads(p.read_text()) for p in self.dir.glob("file-*.json")]
        metas = sorted((m for m in metas if purpose in (None, m["purpose"])), key=lambda m: -m["created_at"])
        return {"object": "list", "data": metas, "has_more": False}


def parse_upload(content_type: str, body: bytes) -> tuple[str, bytes, str]:
    """(purpose, file bytes, filename) of a multipart/form-data upload, as the openai client sends it."""
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "File uploads must be multipart/form-data.", param="file")
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, tuple[bytes, str | None]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_payload(decode=True) or b"", part.get_filename())
    if "file" not in fields:
        raise ApiError(400, "Missing required parameter: 'file'.", param="file")
    purpose = fields.get("purpose", (b"", None))[0].decode("utf-8", "replace").strip()
    if purpose not in PURPOSES:
        raise ApiError(400, f"Invalid purpose {purpose!r}: one of {', '.join(PURPOSES)}.", param="purpose")
    data, filename = fields["file"]
    return purpose, data, filename or "upload.jsonl"


def _bad_line(where: str, n: int, msg: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, f"{where}line {n}: {msg}", param=param, code=code, line=n)


def read_requests(data: bytes, endpoint: str | None = None, source: str = "") -> list[dict]:
    """The request lines of a batch input file, each {custom_id, method, url, body}; the first fault found is an
    ApiError(400) naming the file (`source`), its line (1-based) and field. With `endpoint`, every url must be
    that endpoint."""
    where = f"{source}, " if source else ""
    out: list[dict] = []
    seen: set[str] = set()
    for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        bad = functools.partial(_bad_line, where, n)
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as e:
            raise bad(f"not valid JSON ({e.msg})", code="invalid_json") from None
        if not isinstance(line, dict):
            raise bad("a request is a JSON object")
        cid = line.get("custom_id")
        if not isinstance(cid, str) or not cid:
            raise bad("field 'custom_id' must be a non-empty string", "custom_id", "missing_required_parameter")
        if cid in seen:
            raise bad(f"custom_id {cid!r} is used twice; each must be unique", "custom_id", "duplicate_custom_id")
        if line.get("method") != "POST":
            raise bad("field 'method' must be \"POST\"", "method", "invalid_method")
        allowed = (endpoint,) if endpoint else ENDPOINTS
        if line.get("url") not in allowed:
            raise bad(f"field 'url' is {line.get('url')!r}, expected {' or '.join(allowed)}", "url", "invalid_url")
        if not isinstance(line.get("body"), dict):
            raise bad("field 'body' must be a JSON object", "body", "invalid_body")
        seen.add(cid)
        out.append(line)
    if not out:
        raise ApiError(400, "The batch input file holds no requests.", code="empty_file")
    if len(out) > MAX_REQUESTS:
        raise ApiError(400, f"The file holds {len(out)} requests; a batch holds at most {MAX_REQUESTS}.",
                       code="too_many_requests")
    return out
