"""`alpagasus serve`: an OpenAI-compatible endpoint over a local model."""
from __future__ import annotations

from typing import Optional

import typer

from alpagasus.cli import app


@app.command()
def serve(
    model: str = typer.Option("embedded:smollm2", help="A model directory, hub id, .gguf file or embedded:NAME."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0 picks a free one)."),
    name: Optional[str] = typer.Option(None, help="Model name to report (default: the model argument)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ..."),
) -> None:
    """Serve a local model on an OpenAI-compatible API (/v1/chat/completions, with logprobs)."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.serve import serve as run

    with user_errors():  # an unknown model, an address that cannot be bound
        run(model, host=host, port=port, name=name, device=device)
