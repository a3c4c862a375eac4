"""A small OpenAI-compatible server over a local causal LM (`alpagasus serve`).

It lets the `openai:` judge (and `generate --backend openai`) run against the embedded model with no key and
no network, and gives the tests a real HTTP server on 127.0.0.1. Endpoints: GET /v1/models,
POST /v1/chat/completions (temperature, max_tokens, logprobs/top_logprobs, a final assistant message continued).
Requests are served one at a time: the model is not re-entrant.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alpagasus.errors import UserError
from alpagasus.models import generate_tokens, load_causal_lm, messages_prompt, prompt_ids


class ModelRunner:
    """One local model behind the HTTP handler: loaded, prompted and run with alpagasus.models, as the hf judge
    and `generate --backend transformers` do, so that a served model answers as the local one does."""

    def __init__(self, model: str, name: str | None = None, device: str | None = None):
        self.model, self.tok = load_causal_lm(model, device=device)
        self.name = name or model
        # every model call runs on this one thread: the model is not re-entrant, and torch starts a new OpenMP
        # team for each new calling thread (about a second on a busy CPU), while the HTTP server starts a
        # thread per connection (every request, for clients without keep-alive)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    def prompt(self, messages: list[dict]) -> str:
        prefix = ""
        if messages and messages[-1].get("role") == "assistant":  # continue the assistant's answer
            prefix, messages = messages[-1].get("content") or "", messages[:-1]
        # without a chat template the model starts its answer after a blank line
        return messages_prompt(self.tok, messages, prefix, plain_suffix="\n\n")

    def complete(self, body: dict) -> dict:
        return self.worker.submit(self._complete, body).result()

    def _complete(self, body: dict) -> dict:
        ids = prompt_ids(self.tok, self.prompt(body.get("messages") or []))
        max_new = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        temperature = float(body.get("temperature") or 0.0)
        top_n = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
        if temperature > 0 and body.get("seed") is not None:
            import torch

            torch.manual_seed(int(body["seed"]))
        out, n_in = generate_tokens(self.model, self.tok, [ids], max_new, temperature,
                                    float(body.get("top_p") or 1.0), return_dict_in_generate=True,
                                    output_logits=bool(top_n))
        new = out.sequences[0, n_in:]
        eos = self.tok.eos_token_id
        finish = "stop" if eos is not None and len(new) and int(new[-1]) == eos else "length"
        content = self.tok.decode(new, skip_special_tokens=True)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                                  "finish_reason": finish, "logprobs": None}
        if top_n:
            choice["logprobs"] = {"content": self._logprobs(out.logits, new, top_n)}
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name, "choices": [choice],
                "usage": {"prompt_tokens": n_in, "completion_tokens": int(len(new)), "total_tokens": n_in + len(new)}}

    def _logprobs(self, logits: Any, new: Any, top_n: int) -> list[dict]:
        import torch

        items = []
        for step, tok_id in enumerate(new.tolist()):
            lp = torch.log_softmax(logits[step][0].float(), dim=-1)
            top = torch.topk(lp, min(top_n, lp.shape[-1]))
            items.append({"token": self.tok.decode([tok_id]), "logprob": float(lp[tok_id]), "bytes": None,
                          "top_logprobs": [{"token": self.tok.decode([int(i)]), "logprob": float(v), "bytes": None}
                                           for v, i in zip(top.values.tolist(), top.indices.tolist())]})
        return items


def make_handler(runner: ModelRunner) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet: tests start this server often
            pass

        def _send(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": runner.name, "object": "model", "owned_by": "local"}]})
            elif self.path.rstrip("/") in ("/health", ""):
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self) -> None:
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            except json.JSONDecodeError as e:
                return self._send(400, {"error": {"message": f"bad JSON: {e}", "type": "invalid_request_error"}})
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            if not body.get("messages"):
                return self._send(400, {"error": {"message": "messages is required", "type": "invalid_request_error"}})
            try:
                self._send(200, runner.complete(body))
            except Exception as e:  # report, keep serving
                self._send(500, {"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}})

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away (killed, timed out): nothing to report
        super().handle_error(request, client_address)


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          device: str | None = None, ready: threading.Event | None = None) -> None:
    runner = ModelRunner(model, name=name, device=device)
    try:
        server = _Server((host, port), make_handler(runner))
    except (OSError, OverflowError) as e:  # address in use, unknown host, port out of range
        raise UserError(f"cannot listen on {host}:{port}: {e}") from None
    print(f"serving {runner.name} on http://{host}:{server.server_address[1]}/v1", flush=True)
    if ready:
        ready.set()
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C: the way to stop it
        pass
    finally:
        server.server_close()
