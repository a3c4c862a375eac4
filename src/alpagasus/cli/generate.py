"""`alpagasus generate`: flags -> GenerateConfig -> one library call (answers to the test sets)."""

from __future__ import annotations

from pathlib import Path

import typer

from alpagasus.cli import app
from alpagasus.cli._errors import fail, user_errors


@app.command()
def generate(
    model: str = typer.Argument(
        ...,
        help="A run directory, model directory, .gguf or embedded name; with "
        "--backend openai, the served model's name.",
    ),
    testset: list[str] = typer.Option(
        ["all"],
        "--testset",
        "-t",
        help="vicuna | koala | sinstruct | wizardlm | all | a JSONL of questions (repeatable, or comma-separated).",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Answers JSONL (appended; answered questions are skipped on a re-run)."
    ),
    backend: str = typer.Option("transformers", help="transformers | openai | vllm."),
    chat_template: bool = typer.Option(
        False, "--chat-template", help="Prompt with the model's chat template instead of the Alpaca format."
    ),
    max_new_tokens: int = typer.Option(512, help="Max tokens per answer."),
    temperature: float = typer.Option(0.0, help="0 = greedy decoding; > 0 samples."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (with --temperature > 0)."),
    seed: int | None = typer.Option(None, help="Sampling seed."),
    batch_size: int | None = typer.Option(
        None, help="Questions per batch (default: 8 transformers, 256 vllm, --concurrency openai)."
    ),
    limit: int | None = typer.Option(None, help="Answer only the first N questions of each test set."),
    fraction: float | None = typer.Option(
        None, help="Answer a seeded random share of each test set (0-1]: a subset stratified by test set."
    ),
    sample_seed: int = typer.Option(0, help="The seed of --fraction's subset."),
    name: str | None = typer.Option(None, help="Model name written in the rows (default: MODEL)."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."),
    api_key: str | None = typer.Option(
        None,
        envvar="OPENAI_API_KEY",
        show_envvar=False,
        help="API key for --backend openai (default: $OPENAI_API_KEY).",
    ),
    concurrency: int = typer.Option(8, help="Concurrent requests (openai backend)."),
    device: str | None = typer.Option(None, help="transformers backend device (default: cuda if available)."),
) -> None:
    """Answer the evaluation questions with a model; one JSONL row per answer."""
    from rich.progress import Progress

    from alpagasus.generate.answer import generate as run_generate
    from alpagasus.generate.config import GenerateConfig

    config = GenerateConfig(
        backend=backend,
        prompt_format="chat" if chat_template else "alpaca",
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        limit=limit,
        fraction=fraction,
        sample_seed=sample_seed,
        name=name,
        base_url=base_url,
        api_key=api_key,
        concurrency=concurrency,
        device=device,
    )
    with user_errors(ValueError), Progress(transient=True) as progress:
        task = progress.add_task("answering", total=None)
        result = run_generate(
            model,
            testset,
            output,
            config,
            on_batch=lambda done, total: progress.update(task, completed=done, total=total),
        )
    typer.echo(f"{result.generated} new answers, {result.reused} already in {output}, {len(result.failed)} failed")
    for testset_name, qid, error in result.failed[:10]:
        typer.secho(f"  {testset_name}/{qid}: {error}", err=True, fg=typer.colors.YELLOW)  # redacted by generate
    if result.failed:  # not a mistake of the user's: exit status 1
        fail(f"{len(result.failed)} questions have no answer; run the same command again to retry them", code=1)
