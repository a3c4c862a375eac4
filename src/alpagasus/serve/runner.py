"""The served model: chat requests checked into typed parameters, queued, and run in dynamic batches.

One worker thread owns the model (it is not re-entrant, and torch starts a new OpenMP team for each new calling
thread). It takes the oldest queued request and up to `max_batch - 1` more that share its generation settings
(max tokens, temperature, top_p, logprobs, seed), and runs them as one left-padded `generate`: greedy answers
are the ones each request gets alone, while several clients (or one client with many requests in flight) share
the model's passes. Before a request is run, its HTTP client is asked whether it is still there (`alive`): the
work of a client that gave up (timed out, killed) is dropped instead of computed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from alpagasus.models import generate_tokens, load_causal_lm, messages_prompt, prompt_ids
from alpagasus.serve.files import ApiError

log = logging.getLogger("alpagasus.serve")

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 32_768
MAX_TOP_LOGPROBS = 1 << 20  # more than the API allows (20): a test may ask for the whole vocabulary


class ClientGone(Exception):
    """The client of a queued request closed its connection: the request was not run."""


@dataclass(frozen=True)
class ChatParams:
    """One chat completion request, checked: what the model runs."""

    messages: tuple[tuple[str, str], ...]  # (role, content)
    max_new: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    logprobs: bool = False
    top_logprobs: int = 0
    seed: int | None = None

    def batch_key(self) -> tuple:
        """Requests with the same key can share one `generate`; a seeded sampled request runs alone (its
        random stream would otherwise depend on its neighbours)."""
        alone = object() if self.temperature > 0 and self.seed is not None else None
        return self.max_new, self.temperature, self.top_p, self.logprobs, self.top_logprobs, alone


def _number(body: dict, name: str, lo: float, hi: float, default: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ApiError(400, f"'{name}' must be a number between {lo:g} and {hi:g}, got {v!r:.40}", param=name)
    return float(v)


def _integer(body: dict, name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ApiError(400, f"'{name}' must be an integer between {lo} and {hi}, got {v!r:.40}", param=name)
    return v


def _content(m: dict, i: int) -> str:
    c = m.get("content")
    if c is None or isinstance(c, str):
        return c or ""
    if isinstance(c, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in c
    ):
        return "".join(p["text"] for p in c)  # content parts: text only
    raise ApiError(400, f"'messages[{i}].content' must be a string or a list of text parts", param=f"messages[{i}]")


def parse_chat(body: dict) -> ChatParams:
    """The parameters of a chat completion request; a bad one is an ApiError(400) naming the field."""
    msgs = body.get("messages")
    if not msgs:
        raise ApiError(400, "messages is required", param="messages")
    if not isinstance(msgs, list):
        raise ApiError(400, f"'messages' must be a list of messages, got {type(msgs).__name__}", param="messages")
    messages = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"'messages[{i}]' must be an object with a string 'role'", param=f"messages[{i}]")
        messages.append((m["role"], _content(m, i)))
    max_new = _integer(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)
    if max_new is None:
        max_new = _integer(body, "max_tokens", 1, MAX_TOKENS_LIMIT)
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise ApiError(400, f"'logprobs' must be true or false, got {logprobs!r:.40}", param="logprobs")
    return ChatParams(
        messages=tuple(messages),
        max_new=max_new or DEFAULT_MAX_TOKENS,
        temperature=_number(body, "temperature", 0, 2, 0.0),
        top_p=_number(body, "top_p", 0, 1, 1.0),
        logprobs=bool(logprobs),
        top_logprobs=_integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS) or 0,
        seed=_integer(body, "seed", -(2**63), 2**64 - 1),
    )


@dataclass
class RunnerStats:
    """What the worker did: requests received (queued), computed, dropped before they ran (client gone), cut
    short while they ran (client gone), generate calls, largest batch."""

    received: int = 0
    computed: int = 0
    dropped: int = 0
    cut: int = 0
    batches: int = 0
    largest: int = 0


@dataclass
class _Job:
    params: ChatParams
    alive: Callable[[], bool] | None
    future: Future = field(default_factory=Future)


class ModelRunner:
    """One local model behind the HTTP handler: loaded, prompted and run with alpagasus.models, as the hf judge
    and `generate --backend transformers` do, so that a served model answers as the local one does."""

    def __init__(self, model: str, name: str | None = None, device: str | None = None, max_batch: int = 8):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model, self.tok = load_causal_lm(model, device=device)
        self.tok.padding_side = "left"  # a batch's new tokens then start at the same column for every row
        self.name, self.max_batch = name or model, max_batch
        self.batch_cap = max_batch  # adapted: see note_batch
        self.lock = threading.Lock()  # held around each generate (a caller may hold it to pause the model)
        self.stats = RunnerStats()
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        gc_eos = getattr(self.model.generation_config, "eos_token_id", None)
        self._stop_ids = {self.tok.eos_token_id, *(gc_eos if isinstance(gc_eos, list) else [gc_eos])} - {None}
        threading.Thread(target=self._loop, daemon=True, name="model").start()

    def prompt(self, messages: tuple[tuple[str, str], ...]) -> str:
        msgs = [{"role": r, "content": c} for r, c in messages]
        prefix = ""
        if msgs and msgs[-1]["role"] == "assistant":  # continue the assistant's answer
            prefix, msgs = msgs[-1]["content"], msgs[:-1]
        # without a chat template the model starts its answer after a blank line
        return messages_prompt(self.tok, msgs, prefix, plain_suffix="\n\n")

    def complete(self, params: ChatParams, alive: Callable[[], bool] | None = None) -> dict:
        """The chat.completion for `params`, once the worker has run it (in a batch); ClientGone when `alive()`
        said False when its turn came."""
        job = _Job(params, alive)
        with self._cond:
            self._queue.append(job)
            self.stats.received += 1
            self._cond.notify()
        return job.future.result()

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # ---- the worker ---------------------------------------------------------------------------------------
    def _gone(self, job: _Job) -> bool:
        """Whether the job's client has left; such a job is answered ClientGone (nobody reads it) and counted."""
        try:
            gone = job.alive is not None and not job.alive()
        except Exception:  # a broken check must not stop the worker
            gone = False
        if gone:
            job.future.set_exception(ClientGone())
            self.stats.dropped += 1
        return gone

    def _take(self) -> list[_Job]:
        """The oldest job and up to batch_cap - 1 later ones with the same settings, removed from the queue;
        the jobs of departed clients are dropped from the whole queue first, so that a batch is of live ones."""
        with self._cond:
            self._queue = [j for j in self._queue if not self._gone(j)]
            if not self._queue:
                return []
            key = self._queue[0].params.batch_key()
            jobs = [j for j in self._queue if j.params.batch_key() == key][: max(1, self.batch_cap)]
            taken = set(map(id, jobs))
            self._queue = [j for j in self._queue if id(j) not in taken]
            return jobs

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
            with self.lock:  # taken once the model is free: what queued meanwhile joins the batch
                live = [j for j in self._take() if j.future.set_running_or_notify_cancel()]
                if not live:
                    continue
                try:
                    results = self.generate_batch([j.params for j in live], [j.alive for j in live])
                except Exception as e:  # answered to each waiting request; the worker keeps serving
                    log.exception("generate failed for a batch of %d", len(live))
                    for j in live:
                        j.future.set_exception(e)
                    continue
            self.stats.computed += len(live)
            self.stats.batches += 1
            self.stats.largest = max(self.stats.largest, len(live))
            self.note_batch(len(live), sum(r is None for r in results))
            for j, r in zip(live, results):
                if r is None:  # its client left during the generation, which stopped its row
                    self.stats.cut += 1
                    j.future.set_exception(ClientGone())
                else:
                    j.future.set_result(r)

    def note_batch(self, size: int, cut: int) -> None:
        """Adapt the batch size after a batch of `size` requests, `cut` of them left by their clients while it
        ran: halve it (clients do not wait that long), or grow it by one after a full batch that all waited."""
        if cut:
            self.batch_cap = max(1, min(self.batch_cap, size) // 2)
        elif size >= self.batch_cap:
            self.batch_cap = min(self.max_batch, self.batch_cap + 1)

    def generate_batch(self, batch: list[ChatParams], alive: list[Callable[[], bool] | None]) -> list[dict | None]:
        """The chat.completion of each request; None for one whose client left while it was generated."""
        p = batch[0]
        ids = [prompt_ids(self.tok, self.prompt(q.messages)) for q in batch]
        if p.temperature > 0 and p.seed is not None:
            import torch

            torch.manual_seed(p.seed)
        departed = _Departed(alive)
        out, n_in = generate_tokens(
            self.model,
            self.tok,
            ids,
            p.max_new,
            p.temperature,
            p.top_p,
            return_dict_in_generate=True,
            output_logits=p.logprobs,
            stopping_criteria=departed.criteria(),
        )
        return [
            None if departed.gone[row] else self._choice(out, n_in, row, len(ids[row]), p) for row in range(len(batch))
        ]

    def _choice(self, out: Any, n_in: int, row: int, n_prompt: int, p: ChatParams) -> dict:
        new = out.sequences[row, n_in:].tolist()
        # a finished row of a batch is padded until every row is done: it ends at its first stop token
        end = next((i + 1 for i, t in enumerate(new) if t in self._stop_ids), None)
        new = new[:end] if end is not None else new
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": self.tok.decode(new, skip_special_tokens=True)},
            "finish_reason": "stop" if end is not None else "length",
            "logprobs": None,
        }
        if p.logprobs:
            choice["logprobs"] = {"content": self._logprobs(out.logits, row, new, p.top_logprobs)}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [choice],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(new), "total_tokens": n_prompt + len(new)},
        }

    def _logprobs(self, logits: Any, row: int, new: list[int], top_n: int) -> list[dict]:
        import torch

        items = []
        for step, tok_id in enumerate(new):
            lp = torch.log_softmax(logits[step][row].float(), dim=-1)
            top = torch.topk(lp, min(top_n, lp.shape[-1]))
            items.append(
                {
                    "token": self.tok.decode([tok_id]),
                    "logprob": float(lp[tok_id]),
                    "bytes": None,
                    "top_logprobs": [
                        {"token": self.tok.decode([int(i)]), "logprob": float(v), "bytes": None}
                        for v, i in zip(top.values.tolist(), top.indices.tolist())
                    ],
                }
            )
        return items


class _Departed:
    """A stopping criterion: a row whose client closed its connection stops generating (every CHECK_EVERY
    tokens); when every client of a batch has left, the generation ends."""

    CHECK_EVERY = 4

    def __init__(self, alive: list[Callable[[], bool] | None]):
        self.alive, self.gone, self.step = alive, [False] * len(alive), 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.step += 1
        if self.step % self.CHECK_EVERY == 0:
            for i, check in enumerate(self.alive):
                if check is not None and not self.gone[i]:
                    try:
                        self.gone[i] = not check()
                    except Exception:  # a broken check keeps the row going
                        pass
        return torch.tensor(self.gone, dtype=torch.bool, device=input_ids.device)

    def criteria(self) -> Any:
        """As generate's `stopping_criteria` (transformers is imported here, when a model runs)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        check = type("DepartedClients", (StoppingCriteria,), {"__call__": lambda _, ids, sc, **kw: self(ids, sc)})
        return StoppingCriteriaList([check()])


def chat_completion(runner: ModelRunner, body: dict, alive: Callable[[], bool] | None = None) -> tuple[int, dict]:
    """POST /v1/chat/completions, as (HTTP status, JSON body): the direct endpoint and every batch line.
    ClientGone propagates (nobody is left to answer)."""
    try:
        return 200, runner.complete(parse_chat(body), alive)
    except ApiError as e:
        return e.status, e.body()
    except ClientGone:
        raise
    except Exception:  # logged with its traceback here; the client gets no internal text
        log.exception("chat completion failed")
        return 500, {
            "error": {
                "message": "The server failed to answer this request (its log has the details).",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
