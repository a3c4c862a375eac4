"""Files out: JSONL, JSON, CSV/TSV and Parquet, always written atomically (a temp file beside the target, fsync,
rename), so a crash leaves the old file or the new one; temp files a killed writer left are removed by the next."""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping

from alpagasus.data.read import DataError


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temp file beside `path`, fsync, then rename: a crash leaves the old file or the new one."""
    target = Path(path)
    if target.is_dir():
        raise DataError(f"{target}: is a directory; give a file name to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise DataError(f"{target}: cannot create its folder ({e}): a part of the path is a file") from None
    _remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.p{os.getpid()}.", suffix=".tmp", dir=target.parent)
    try:
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding="utf-8" if text else None, errors="surrogatepass" if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_stale_temps(target: Path) -> None:
    """Temp files an earlier writer of `target` left when it was killed mid-write (kill -9, power loss): those of
    a process that no longer runs, and unmarked ones (older versions) not touched for an hour."""
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        marker = tmp.name[len(target.name) + 2 :].split(".", 1)[0]
        alive = (
            marker[1:].isdigit() and _pid_alive(int(marker[1:]))
            if marker.startswith("p")
            else time.time() - tmp.stat().st_mtime < 3600
        )
        if not alive:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    n = 0
    with atomic_writer(path) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_writer(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_rows(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> int:
    """Write rows in the format the suffix names: .jsonl, .json (a list), .csv or .parquet. Rows stream
    through (CSV too when `columns` is given; Parquet in chunks), so memory does not grow with the output."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return write_jsonl(path, rows)
    n = 0
    if suffix == ".json":
        with atomic_writer(path) as f:
            f.write("[")
            for r in rows:
                f.write(("," if n else "") + "\n  " + json.dumps(r, ensure_ascii=False))
                n += 1
            f.write("\n]\n" if n else "]\n")
    elif suffix == ".csv":
        if columns is None:  # the header is the union of all keys: needs the rows first
            rows = list(rows)
            columns = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_writer(path) as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for r in rows:
                w.writerow({k: _csv_cell(v) for k, v in r.items()})
                n += 1
    elif suffix in (".parquet", ".pq"):
        n = _write_parquet(path, rows)
    else:
        raise DataError(f"{path}: unknown output format (use .json, .jsonl, .csv or .parquet)")
    return n


def _write_parquet(path: str | Path, rows: Iterable[Mapping[str, Any]], chunk: int = 20000) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, writer, schema = 0, None, None
    batch: list[Mapping[str, Any]] = []
    with atomic_writer(path, "wb") as f:

        def flush() -> None:
            nonlocal writer, schema
            if schema is None:  # the first chunk fixes the schema; all-null columns become strings
                inferred = pa.Table.from_pylist(batch).schema
                schema = pa.schema([pa.field(x.name, pa.string()) if pa.types.is_null(x.type) else x for x in inferred])
                writer = pq.ParquetWriter(f, schema)
            try:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise DataError(
                    f"{path}: rows {n - len(batch) + 1}-{n} do not fit the columns of the first "
                    f"rows ({e}); write .jsonl instead"
                ) from e

        for r in rows:
            batch.append(r)
            n += 1
            if len(batch) >= chunk:
                flush()
                batch = []
        if batch or writer is None:
            if batch:
                flush()
            else:
                writer = pq.ParquetWriter(f, pa.schema([]))
        if writer is not None:  # always set by now; the check is for the type checker
            writer.close()
    return n


def _csv_cell(v: Any) -> Any:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
