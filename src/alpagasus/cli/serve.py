"""`alpagasus serve`: an OpenAI-compatible endpoint over a local model, with files, batches and batch faults."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from alpagasus.cli import app

FAULTS = "Batch faults (testing a client)"


@app.command()
def serve(
    model: str = typer.Option("embedded:smollm2", help="A model directory, hub id, .gguf file or embedded:NAME."),
    host: str = typer.Option("127.0.0.1", help="Address to bind. Any other than loopback needs --api-key."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0 picks a free one)."),
    name: str | None = typer.Option(None, help="Model name to report (default: the model argument)."),
    device: str | None = typer.Option(None, help="cpu, cuda, ..."),
    files_dir: Path | None = typer.Option(
        None,
        "--files-dir",
        help="Folder for /v1/files and the batches "
        "(both survive a restart on it); default: a new temporary folder, "
        "removed when the server stops.",
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="ALPAGASUS_SERVE_API_KEY",
        show_default=False,
        help="Key every request must send (Authorization: Bearer KEY; the openai "
        "judge sends OPENAI_API_KEY). Required when --host is not loopback.",
    ),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        help="A host name clients may use in the Host header "
        "besides the address bound, 127.0.0.1 and localhost (repeatable).",
    ),
    max_batch: int = typer.Option(
        8,
        "--max-batch",
        min=1,
        help="Chat requests with the same settings run together in one generate call, up to this many.",
    ),
    expire_after: int | None = typer.Option(
        None,
        "--fault-expire-after",
        min=0,
        rich_help_panel=FAULTS,
        help="A batch expires after N requests: partial output, the rest `batch_expired` in the error file.",
    ),
    fail_every: int | None = typer.Option(
        None,
        "--fault-fail-every",
        min=1,
        rich_help_panel=FAULTS,
        help="Every K-th request of a batch fails (500, in the error file).",
    ),
    fail_validation: bool = typer.Option(
        False,
        "--fault-fail-validation",
        rich_help_panel=FAULTS,
        help="A batch ends `failed` at validation, with errors.",
    ),
    vanish: bool = typer.Option(
        False,
        "--fault-vanish",
        rich_help_panel=FAULTS,
        help="A batch is forgotten once created: retrieve and cancel answer 404.",
    ),
    delay: float = typer.Option(
        0.0,
        "--fault-delay",
        min=0.0,
        rich_help_panel=FAULTS,
        help="Seconds to wait before each request of a batch (a slow batch).",
    ),
    fault_batches: int | None = typer.Option(
        None,
        "--fault-batches",
        min=1,
        rich_help_panel=FAULTS,
        help="The faults apply to the first N batches only (default: all).",
    ),
) -> None:
    """Serve a local model on an OpenAI-compatible API: /v1/chat/completions (with logprobs; concurrent requests
    run in batches), /v1/files and /v1/batches (batches run in the background; the --fault-* options make them
    expire, fail or vanish). Stop it with Ctrl-C or SIGTERM."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.serve import BatchFaults
    from alpagasus.serve import serve as run

    faults = BatchFaults(
        expire_after=expire_after,
        fail_every=fail_every,
        fail_validation=fail_validation,
        vanish=vanish,
        delay=delay,
        batches=fault_batches,
    )
    with user_errors():  # an unknown model, an address that cannot be bound, a folder that cannot be made
        run(
            model,
            host=host,
            port=port,
            name=name,
            device=device,
            files_dir=files_dir,
            faults=faults,
            api_key=api_key,
            allow_hosts=tuple(allow_host),
            max_batch=max_batch,
        )
    # stopped (Ctrl-C, SIGTERM) and cleaned up: leave at once; tearing down torch takes seconds on a busy CPU,
    # longer than a supervisor (or a test) waits after SIGTERM
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
