"""`alpagasus run RECIPE.yaml`: the whole experiment, resumable stage by stage."""

from __future__ import annotations

from pathlib import Path

import typer

from alpagasus.cli import app


@app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(..., help="YAML recipe (see recipes/)."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Where everything goes (default runs/NAME)."),
    until: str | None = typer.Option(
        None, help="Stop after this stage: rate, select, train, generate, compare, report."
    ),
    only: str | None = typer.Option(None, help="Run just this stage (again)."),
) -> None:
    """Rate -> select (filtered, random, longest, all) -> train -> generate -> compare -> report, from one recipe."""
    from rich.console import Console

    from alpagasus.cli._errors import user_errors
    from alpagasus.redact import redact
    from alpagasus.run.recipe import run_recipe

    console = Console(stderr=True, soft_wrap=True)
    with user_errors():  # a bad recipe, stage, file or model: one message (incl. a missing embedded model package)
        results = run_recipe(
            recipe,
            run_dir,
            until=until,
            only=only,
            log=lambda m: console.print(redact(m), markup=False, highlight=False),
        )
    final = (results.get("report") or {}).get("final")
    if final:
        typer.echo(final)
