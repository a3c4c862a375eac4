"""The Batches endpoint of `alpagasus serve`: batches run in the background over the served model, with faults.

Usage (tests, benchmarks): a server in this process, with or without faults, yielding its base URL:

    from alpagasus.serve import BatchFaults, start_server
    with start_server(tiny_model, faults=BatchFaults(fail_every=3)) as url:   # url = http://127.0.0.1:PORT/v1
        client = openai.OpenAI(base_url=url, api_key="none")
        f = client.files.create(file=("in.jsonl", data), purpose="batch")
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")

`start_server` also takes a `ModelRunner` (to share one loaded model between servers) and `files_dir`. The same
faults as flags of the command: `alpagasus serve --fault-expire-after 2 --fault-batches 1 ...` (`--help`).

A batch goes validating -> in_progress -> finalizing -> completed (or failed / expired / cancelling ->
cancelled), with `request_counts` updated after every request. Each request line is answered by the same code
as POST /v1/chat/completions; the output and error files hold one line per request, the API's
{id, custom_id, response: {status_code, request_id, body}, error}. A request answered with a status other than
200 goes to the error file (with its response); one never run because the batch expired goes there with
`response: null, error: {code: "batch_expired"}`. A cancelled batch keeps the lines it finished (output and
error files) and writes nothing for the rest. `output_file_id` / `error_file_id` are null when that file would
be empty, as the API does. Batches live in memory (files live in `files_dir`).

Faults (`BatchFaults`; each applies to the first `batches` batches created, or to every batch when None):
- `expire_after=N`: after N requests are done the batch is `expired`: a partial output file, the rest
  `batch_expired` in the error file;
- `fail_every=K`: every K-th request (1-based: K, 2K, ...) is answered 500 {"error": ...} in the error file;
- `fail_validation=True`: the batch ends `failed` at validation, with `errors` and no files;
- `vanish=True`: the batch is created (the create call returns it) and then forgotten: retrieve, cancel -> 404,
  list leaves it out, nothing runs;
- `delay=S`: S seconds before each request (a slow batch: kill a client while it waits).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Callable

from alpagasus.serve.batchlog import BatchLog
from alpagasus.serve.files import ENDPOINTS, ApiError, FileStore, count_requests, iter_requests, not_found

log = logging.getLogger("alpagasus.serve")
TERMINAL = ("completed", "failed", "expired", "cancelled")

WINDOW_S = 24 * 3600
Complete = Callable[[dict], "tuple[int, dict]"]  # a chat completion request body -> (HTTP status, JSON body)


@dataclass
class BatchFaults:
    """Faults the server injects into batches (see the module docstring)."""

    expire_after: int | None = None
    fail_every: int | None = None
    fail_validation: bool = False
    vanish: bool = False
    delay: float = 0.0
    batches: int | None = None  # the faults apply to the first N batches created; None: to every batch

    def __post_init__(self) -> None:
        if self.fail_every is not None and self.fail_every < 1:
            raise ValueError("fail_every must be >= 1")
        if self.expire_after is not None and self.expire_after < 0:
            raise ValueError("expire_after must be >= 0")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")

    def any(self) -> bool:
        return bool(
            self.expire_after is not None or self.fail_every or self.fail_validation or self.vanish or self.delay
        )


NO_FAULTS = BatchFaults()


class BatchManager:
    """Every batch of one server: create, retrieve, list, cancel; one background thread per running batch.
    Batches found in the files folder's `batches/` (a server that ran before on it) are listed and resumed."""

    def __init__(
        self, files: FileStore, complete: Complete, faults: BatchFaults | None = None, model: str | None = None
    ):
        self.files, self.complete, self.faults, self.model = files, complete, faults or NO_FAULTS, model
        self._lock = threading.Lock()
        self._batches: dict[str, dict] = {}  # insertion order = creation order
        self._cancel: dict[str, threading.Event] = {}
        self._faults: dict[str, BatchFaults] = {}
        self._closing = threading.Event()
        self._created = 0
        self.log = BatchLog(files)
        for batch, saved in self.log.load():
            self._batches[batch["id"]] = batch
            self._faults[batch["id"]] = BatchFaults(**saved)
            self._cancel[batch["id"]] = threading.Event()
            if batch["status"] not in TERMINAL:
                self._start(batch)

    def _start(self, batch: dict) -> None:
        threading.Thread(
            target=self._run, args=(batch, self._faults[batch["id"]]), daemon=True, name=batch["id"]
        ).start()

    # ---- the API --------------------------------------------------------------------------------------------
    def create(self, body: dict) -> dict:
        file_id, endpoint = body.get("input_file_id"), body.get("endpoint")
        if not isinstance(file_id, str) or not file_id:
            raise ApiError(400, "Missing required parameter: 'input_file_id'.", param="input_file_id")
        if endpoint not in ENDPOINTS:
            raise ApiError(
                400, f"Invalid endpoint {endpoint!r}: this server runs {', '.join(ENDPOINTS)}.", param="endpoint"
            )
        if body.get("completion_window") != "24h":
            raise ApiError(400, "Invalid completion_window: only '24h' is supported.", param="completion_window")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and len(metadata) <= 16
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise ApiError(400, "metadata holds at most 16 string keys with string values.", param="metadata")
        self.files.get(file_id)  # 404 for an unknown file
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": f"batch_{uuid.uuid4().hex[:24]}",
            "object": "batch",
            "endpoint": endpoint,
            "model": self.model,
            "errors": None,
            "input_file_id": file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + WINDOW_S,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": None,
            "metadata": metadata,
        }
        with self._lock:
            self._created += 1
            faults = self.faults if self.faults.batches is None or self._created <= self.faults.batches else NO_FAULTS
            created = json.loads(json.dumps(batch))
            if faults.vanish:
                return created  # answered once, then gone
            self._batches[batch["id"]] = batch
            self._cancel[batch["id"]] = threading.Event()
            self._faults[batch["id"]] = faults
            self._save(batch)
        self._start(batch)
        return created

    def retrieve(self, batch_id: str) -> dict:
        with self._lock:
            if batch_id not in self._batches:
                raise not_found("batch", batch_id)
            return json.loads(json.dumps(self._batches[batch_id]))

    def list(self, limit: int = 20, after: str | None = None) -> dict:
        """Newest first; `after` is the id of the last batch of the previous page (the client's cursor)."""
        if not 1 <= limit <= 100:
            raise ApiError(400, "limit must be between 1 and 100.", param="limit")
        with self._lock:
            ids = list(reversed(self._batches))
            start = 0
            if after is not None:
                if after not in self._batches:
                    raise not_found("batch", after)
                start = ids.index(after) + 1
            page = [json.loads(json.dumps(self._batches[i])) for i in ids[start : start + limit]]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(ids),
        }

    def cancel(self, batch_id: str) -> dict:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                raise not_found("batch", batch_id)
            if batch["status"] in ("validating", "in_progress"):
                batch.update(status="cancelling", cancelling_at=int(time.time()))
                self._save(batch)
                self._cancel[batch_id].set()
            elif batch["status"] not in ("cancelling", "cancelled"):
                raise ApiError(400, f"Cannot cancel a batch with status '{batch['status']}'.", code="conflict")
            return json.loads(json.dumps(batch))

    def close(self) -> None:
        """Stop every running batch at its next request, as it is: the server is going away (its model may be
        shared); a server started on the same folder resumes them."""
        self._closing.set()
        with self._lock:
            for event in self._cancel.values():
                event.set()

    # ---- the background run ---------------------------------------------------------------------------------
    def _save(self, batch: dict) -> None:
        """Write the batch's state (under self._lock)."""
        self.log.save(batch, asdict(self._faults.get(batch["id"], NO_FAULTS)))

    def _set(self, batch: dict, **fields: Any) -> None:
        with self._lock:
            batch.update(fields)
            self._save(batch)

    def _advance(self, batch: dict, stop: threading.Event, **fields: Any) -> bool:
        """Move to the next status unless a cancel (or the server's close) came first (checked under the lock
        cancel() takes)."""
        with self._lock:
            if stop.is_set():
                return False
            batch.update(fields)
            self._save(batch)
            return True

    def _run(self, batch: dict, faults: BatchFaults) -> None:
        try:
            self._run_batch(batch, faults)
        except Exception as e:  # a server bug: the batch fails visibly instead of hanging in_progress
            if self._closing.is_set():
                return  # the folder may be gone with the server
            log.exception("batch %s failed", batch["id"])
            self._set(
                batch,
                status="failed",
                failed_at=int(time.time()),
                errors={
                    "object": "list",
                    "data": [
                        {"code": "server_error", "message": f"{type(e).__name__}: {e}", "param": None, "line": None}
                    ],
                },
            )

    def _stopped(self, batch: dict) -> bool:
        """After the stop event: True when the server is closing (the batch stays as it is, to be resumed)."""
        return self._closing.is_set() and batch["status"] != "cancelling"

    def _validate(self, batch: dict, faults: BatchFaults, stop: threading.Event) -> bool:
        """A new batch's input counted and the batch moved to in_progress; False when it failed validation (its
        status is then "failed") or was stopped before it started."""
        self.log.reset(batch["id"])
        try:
            if faults.fail_validation:
                raise ApiError(400, "The input file failed validation (injected fault).", code="invalid_request")
            total = count_requests(self.files.path(batch["input_file_id"]), batch["endpoint"], batch["input_file_id"])
        except ApiError as e:
            self._set(
                batch,
                status="failed",
                failed_at=int(time.time()),
                errors={
                    "object": "list",
                    "data": [
                        {"code": e.code or "invalid_request", "message": str(e), "param": e.param, "line": e.line}
                    ],
                },
            )
            return False
        return self._advance(
            batch,
            stop,
            status="in_progress",
            in_progress_at=int(time.time()),
            request_counts={"total": total, "completed": 0, "failed": 0},
        )

    def _run_batch(self, batch: dict, faults: BatchFaults) -> None:
        stop, bid = self._cancel[batch["id"]], batch["id"]
        if batch["status"] == "cancelling":  # cancelled before a restart
            return self._finish(batch, "cancelled")
        if batch["status"] == "validating" and not self._validate(batch, faults, stop):
            return None if batch["status"] == "failed" or self._stopped(batch) else self._finish(batch, "cancelled")
        done = self.log.answered(bid)  # a resumed batch: lines answered before the restart
        with self._lock:
            batch["request_counts"].update(completed=done.completed, failed=done.failed)
        with open(self.files.path(batch["input_file_id"]), "rb") as f:
            reqs = enumerate(iter_requests(f, batch["endpoint"], batch["input_file_id"]), 1)
            for i, req in reqs:
                if req["custom_id"] in done.ids:
                    continue
                if stop.is_set():  # cancelled, or the server closes
                    return None if self._stopped(batch) else self._finish(batch, "cancelled")
                if faults.expire_after is not None and i > faults.expire_after:
                    for r in itertools.chain([req], (r for _, r in reqs)):
                        self.log.append(
                            bid,
                            "error",
                            _line(
                                r["custom_id"],
                                None,
                                {
                                    "code": "batch_expired",
                                    "message": "This request could not be executed before the completion window expired.",
                                },
                            ),
                        )
                    return self._finish(batch, "expired")
                if faults.delay and stop.wait(faults.delay):  # cancelled (or closed) while it waited
                    return None if self._stopped(batch) else self._finish(batch, "cancelled")
                if faults.fail_every and i % faults.fail_every == 0:
                    status, body = (
                        500,
                        {
                            "error": {
                                "message": f"injected failure of request {i}",
                                "type": "server_error",
                                "param": None,
                                "code": None,
                            }
                        },
                    )
                else:
                    status, body = self.complete(req["body"])
                self.log.append(
                    bid,
                    "output" if status == 200 else "error",
                    _line(
                        req["custom_id"],
                        {"status_code": status, "request_id": f"req_{uuid.uuid4().hex[:24]}", "body": body},
                        None,
                    ),
                )
                with self._lock:
                    batch["request_counts"]["completed" if status == 200 else "failed"] += 1
        if not self._advance(batch, stop, status="finalizing", finalizing_at=int(time.time())):
            return None if self._stopped(batch) else self._finish(batch, "cancelled")
        self._finish(batch, "completed")

    def _finish(self, batch: dict, status: str) -> None:
        files, usage = {}, None
        if batch["in_progress_at"] is not None:
            usage = self.log.usage(batch["id"])
            for key, kind in (("output_file_id", "output"), ("error_file_id", "error")):
                path = self.log.take(batch["id"], kind)
                if path is not None:
                    files[key] = self.files.add_file(path, f"{batch['id']}_{kind}.jsonl", "batch_output")["id"]
        self._set(batch, status=status, usage=usage, **files, **{f"{status}_at": int(time.time())})
        self.log.reset(batch["id"])


def _line(custom_id: str, response: dict | None, error: dict | None) -> dict:
    """One line of an output or error file, as the API writes it."""
    return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id, "response": response, "error": error}
