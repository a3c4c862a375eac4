"""JSON text read in bounded pieces: JSONL lines and the items of a JSON list, whatever one row holds.

Memory holds one row at most `max_row_bytes` long (plus one read chunk): a longer line or list item is read
in chunks and dropped as it goes, and comes out as an InvalidRow giving its size; a row nested deeper than
MAX_DEPTH is an InvalidRow too (Python's parser would end in a RecursionError, our writers in another). A JSON
list is decoded item by item (`json.JSONDecoder.raw_decode` over a sliding window), never read whole.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any, BinaryIO, Iterator

from alpagasus.records import InvalidRow

# A row (a JSONL line, a JSON list item) above this is invalid: 1 MiB is twice the text a 128k-token judge
# context holds (~4 bytes a token), so such a row could not be judged whole anyway, while 16x of it (what
# parsing, validating and hashing cost) stays small. Alpaca's largest row is 4.3 kB, Dolly's 13 kB.
MAX_ROW_BYTES = 1 << 20
# Nesting allowed in one row: data rows are flat (depth 1); past ~900 Python's json raises RecursionError.
MAX_DEPTH = 100
CHUNK = 1 << 20
_WS = re.compile(r"[ \t\r\n]*")
_SEP = re.compile(r"[ \t\r\n]*([,\]])[ \t\r\n]*")
_OUT = re.compile(r'[\[\]{}",]')  # what matters to an item's extent outside strings
_IN = re.compile(r'["\\]')  # ... and inside one


def too_big(source: str, row: int, size: int, limit: int, exact: bool = True) -> InvalidRow:
    got = f"{size:,} bytes" if exact else f"at least {size:,} bytes"
    return InvalidRow(source, row, None, f"row of {got}, above the limit of {limit:,} (--max-row-bytes)")


def too_deep(source: str, row: int) -> InvalidRow:
    return InvalidRow(source, row, None, f"nested deeper than {MAX_DEPTH} levels")


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and objects in `value` nest more than `limit` levels: a flat object (the usual row) at
    once, else an iterative walk, with no recursion to overflow."""
    if type(value) is dict:
        for c in value.values():
            if type(c) is dict or type(c) is list:
                break
        else:
            return False
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        if children and d > limit:
            return True
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_line(text: str, source: str, row: int) -> Any:
    """One JSONL line's value, or an InvalidRow saying why it is none."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return InvalidRow(source, row, None, f"malformed JSON line: {e.msg} at column {e.colno}")
    except RecursionError:
        return too_deep(source, row)
    return too_deep(source, row) if deeper_than(value) else value


def bounded_lines(f: BinaryIO, limit: int | None) -> Iterator[tuple[int, bytes | int]]:
    """(line number, bytes) of each line; a line longer than `limit` bytes (its newline aside) gives its size
    instead, its bytes read in chunks and dropped, so memory holds `limit` bytes whatever the line holds."""
    lineno = 0
    while True:
        line = f.readline(limit + 1) if limit is not None else f.readline()
        if not line:
            return
        lineno += 1
        if limit is None or line.endswith(b"\n") or len(line) <= limit:
            yield lineno, line
            continue
        size = len(line)
        while True:  # the rest of an over-long line, never kept
            part = f.readline(CHUNK)
            size += len(part)
            if not part or part.endswith(b"\n"):
                size -= part.endswith(b"\n")
                break
        yield lineno, size


class ListReader:
    """The items of a top-level JSON list, one at a time: (item number, value or InvalidRow). The window holds
    one item (at most `limit` bytes when given) plus one chunk. Bad JSON raises ValueError with its line."""

    def __init__(self, f: BinaryIO, source: str, limit: int | None, chunk: int = CHUNK):
        self.f, self.source, self.limit, self.chunk = f, source, limit, chunk
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf, self.pos, self.eof, self.line, self.col = "", 0, False, 1, 0  # line and column of buf[0]
        self.raw_decode = json.JSONDecoder().raw_decode

    def _fill(self, size: int | None = None) -> None:
        """Drop what is behind `pos` and read more (`size` bytes: doubling the window for a long item keeps its
        retries linear); sets `eof` at the end of the file."""
        data = self.f.read(size or self.chunk)
        newlines, last = self.buf.count("\n", 0, self.pos), self.buf.rfind("\n", 0, self.pos)
        self.line, self.col = self.line + newlines, self.pos - last - 1 if newlines else self.col + self.pos
        self.buf = self.buf[self.pos :] + self.decoder.decode(data, final=not data)
        self.pos, self.eof = 0, not data

    def _skip_ws(self) -> str:
        """The next character that is not whitespace ("" at the end of the file)."""
        while True:
            ws = _WS.match(self.buf, self.pos)
            assert ws is not None, "_WS matches the empty string, so it matches anywhere"
            self.pos = ws.end()
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos : self.pos + 1]
            self._fill()

    def _where(self, pos: int) -> str:
        newlines, last = self.buf.count("\n", 0, pos), self.buf.rfind("\n", 0, pos)
        return f"line {self.line + newlines}, column {pos - last + (0 if newlines else self.col)}"

    def _bad(self, pos: int, msg: str) -> ValueError:
        return ValueError(f"{self.source}: not valid JSON ({self._where(pos)}: {msg})")

    def _next(self) -> str:
        """Past the whitespace, the separator after an item and the whitespace after it: "," or "]" (one
        regular expression in the usual case; character by character at a chunk's end)."""
        m = _SEP.match(self.buf, self.pos)
        if m is not None and m.end() < len(self.buf):
            self.pos = m.end()
            return m.group(1)
        c = self._skip_ws()
        self.pos += 1
        if c == ",":
            self._skip_ws()
        return c

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        first = self._skip_ws()
        if first == "\ufeff":  # a byte-order mark
            self.pos += 1
            first = self._skip_ws()
        if first != "[":
            raise ValueError(f"{self.source}: expected a JSON list of objects")
        self.pos += 1
        row = 0
        if self._skip_ws() == "]":
            self.pos += 1
        else:
            while True:
                row += 1
                yield row, self._item(row)
                c = self._next()
                if c == "]":
                    break
                if c != ",":
                    raise self._bad(self.pos - 1, "expected ',' or ']' between items")
        if self._skip_ws():
            raise self._bad(self.pos, "extra data after the list")

    def _item(self, row: int) -> Any:
        while True:
            try:
                value, end = self.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                truncated = e.pos >= len(self.buf) - 6 or e.msg.startswith("Unterminated string")
                if self.eof or not truncated:
                    raise self._bad(e.pos, e.msg) from None
                if self.limit is not None and len(self.buf) - self.pos > self.limit:
                    return too_big(self.source, row, self._skip_item(), self.limit, exact=False)
                self._fill(max(self.chunk, len(self.buf) - self.pos))
                continue
            except RecursionError:
                self._skip_item()
                return too_deep(self.source, row)
            if not self.eof and not isinstance(value, (dict, list, str)) and len(self.buf) - end < 4:
                self._fill()  # a number may go on in the next chunk ("1" of "1.5e3")
                continue
            buf, start, self.pos = self.buf, self.pos, end
            if self.limit is not None and (end - start) * 4 > self.limit:  # UTF-8: 1 to 4 bytes a character
                size = len(buf[start:end].encode("utf-8", "surrogateescape"))
                if size > self.limit:
                    return too_big(self.source, row, size, self.limit)
            return too_deep(self.source, row) if deeper_than(value) else value

    def _skip_item(self) -> int:
        """Move past the item starting at `pos` without decoding it, a chunk at a time (only brackets, quotes
        and escapes are looked at); returns the characters skipped (a lower bound of its bytes)."""
        depth, in_string, skipped = 0, False, 0
        while True:
            m = (_IN if in_string else _OUT).search(self.buf, self.pos)
            if m is None or (m.group() == "\\" and m.end() >= len(self.buf)):
                stop = len(self.buf) if m is None else m.start()  # keep a trailing backslash for the next chunk
                skipped += stop - self.pos
                self.pos = stop
                if self.eof:
                    raise self._bad(self.pos, "the file ends inside an item")
                self._fill()
                continue
            c = m.group()
            if not in_string and (c == "," or c in "]}") and depth == 0:
                skipped += m.start() - self.pos
                self.pos = m.start()
                return skipped
            skipped += m.end() - self.pos + (c == "\\")
            self.pos = m.end() + (c == "\\")  # an escape: the character after it is not a quote
            if c == '"':
                in_string = not in_string
            elif c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
