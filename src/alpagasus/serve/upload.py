"""Request bodies of `alpagasus serve`, bounded: Content-Length checked before anything is read, JSON bodies
capped, and multipart uploads streamed to a file in chunks (never held whole in memory)."""

from __future__ import annotations

import io
import json
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import HTTP
from pathlib import Path
from typing import Any, BinaryIO

from alpagasus.serve.files import MAX_BYTES, ApiError

CHUNK = 1 << 20
MAX_JSON_BYTES = 32 * 1024 * 1024  # a chat or batch request body
MAX_UPLOAD_BYTES = MAX_BYTES + 65536  # an upload: the file (MAX_BYTES) and its multipart envelope
MAX_FIELD_BYTES = 4096  # a form field other than the file (purpose)


def content_length(headers: Any, limit: int) -> int:
    """The body's length from the headers: 400 for a malformed one (not digits, negative, absurd, two that
    disagree), 411 for a chunked body, 413 over `limit` (before a byte of it is read)."""
    if headers.get("Transfer-Encoding"):
        raise ApiError(411, "Chunked request bodies are not supported: send Content-Length.", code="length_required")
    values = {v.strip() for v in headers.get_all("Content-Length") or []}
    if not values:
        return 0
    raw = values.pop()
    if values or not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(
            400, f"Bad Content-Length header {raw[:40]!r}.", param="Content-Length", code="invalid_content_length"
        )
    n = int(raw)
    if n > limit:
        raise ApiError(
            413,
            f"The request body ({n} bytes) is over this endpoint's limit of {limit} bytes.",
            code="request_too_large",
        )
    return n


class Body:
    """The request body: at most `length` bytes of `stream`, read in chunks."""

    def __init__(self, stream: BinaryIO | io.BufferedIOBase, length: int):  # a handler's rfile, a file
        self.stream, self.left = stream, length

    def read(self, size: int = CHUNK) -> bytes:
        if self.left <= 0:
            return b""
        data = self.stream.read(min(size, self.left))
        if not data:
            raise ApiError(400, "The request body ended before its Content-Length.", code="incomplete_body")
        self.left -= len(data)
        return data

    def read_all(self) -> bytes:
        parts = []
        while self.left > 0:
            parts.append(self.read())
        return b"".join(parts)

    def json(self) -> dict:
        try:
            body = json.loads(self.read_all() or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(400, f"bad JSON: {e}", code="invalid_json") from None
        except RecursionError:
            raise ApiError(400, "bad JSON: nested too deeply", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
        return body


def _boundary(content_type: str) -> bytes:
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "File uploads must be multipart/form-data.", param="file")
    m = Message()
    m["Content-Type"] = content_type
    b = m.get_param("boundary")
    if not isinstance(b, str) or not 0 < len(b) <= 200:
        raise ApiError(400, "The multipart/form-data upload has no boundary.", param="file")
    return b"\r\n--" + b.encode("latin-1", "replace")


class _Parts:
    """A streaming multipart reader: the delimiter is searched in a buffer of about one chunk."""

    def __init__(self, body: Body, delim: bytes):
        self.body, self.delim, self.buf = body, delim, bytearray(b"\r\n")  # the first boundary has no CRLF

    def _fill(self, what: str) -> None:
        chunk = self.body.read()
        if not chunk:
            raise ApiError(400, f"The multipart upload ended {what}.", param="file")
        self.buf += chunk

    def copy_until_delim(self, sink: BinaryIO | None, limit: int, what: str) -> None:
        """Write the bytes before the next delimiter to `sink` (None: drop them); 413 past `limit` bytes."""
        written, keep = 0, len(self.delim)
        while True:
            k = self.buf.find(self.delim)
            n = k if k >= 0 else max(0, len(self.buf) - keep)
            written += n
            if written > limit:
                raise ApiError(413, f"The {what} is over the limit of {limit} bytes.", code="request_too_large")
            if sink is not None and n:
                sink.write(self.buf[:n])
            if k >= 0:
                del self.buf[: k + keep]
                return
            del self.buf[:n]
            self._fill("before its closing boundary")

    def next_headers(self) -> Message | None:
        """The headers of the next part, or None after the closing boundary."""
        while len(self.buf) < 2:
            self._fill("after a boundary")
        if self.buf[:2] == b"--":
            return None
        while (j := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > 16384:
                raise ApiError(400, "A multipart part's headers are too long.", param="file")
            self._fill("inside a part's headers")
        head = bytes(self.buf[:j]).lstrip(b" \t").removeprefix(b"\r\n")
        del self.buf[: j + 4]
        return BytesHeaderParser(policy=HTTP).parsebytes(head + b"\r\n\r\n")


def stream_upload(content_type: str, body: Body, dest: Path) -> tuple[str, str]:
    """Read a multipart/form-data upload (as the openai client sends it), writing its `file` field to `dest` in
    chunks; returns (purpose, filename). The file is capped at MAX_BYTES (413), other fields at 4 KB."""
    parts = _Parts(body, _boundary(content_type))
    parts.copy_until_delim(None, 65536, "preamble")
    fields: dict[str, str] = {}
    filename = None
    while (headers := parts.next_headers()) is not None:
        name = str(headers.get_param("name", header="content-disposition") or "")
        if name == "file" and filename is None:
            filename = headers.get_filename() or "upload.jsonl"
            with open(dest, "wb") as out:
                parts.copy_until_delim(out, MAX_BYTES, "file")
            continue
        sink = io.BytesIO()
        parts.copy_until_delim(sink, MAX_FIELD_BYTES, f"form field {name!r}")
        fields[name] = sink.getvalue().decode("utf-8", "replace")
    while body.read():  # the epilogue, if any
        pass
    if filename is None:
        raise ApiError(400, "Missing required parameter: 'file'.", param="file")
    return fields.get("purpose", "").strip(), filename
