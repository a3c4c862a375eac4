"""`alpagasus distill`: train a cheap predictor of a strong judge's ratings."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from alpagasus.cli import app


@app.command()
def distill(
    labels: Path = typer.Argument(
        ...,
        help="`alpagasus rate` output (JSONL with score/status), or any table "
        "with instruction/input/output and a label column",
    ),
    out: Path = typer.Option(
        ...,
        "-o",
        "--output",
        "--out",
        help="folder to write the predictor to (head.npz, card.json, README.md); --out is the old name, still accepted",
    ),
    label: str | None = typer.Option(
        None, help="label column: numeric (e.g. a 0-5 score) or true/false; default: `score` of a rate output"
    ),
    threshold: float = typer.Option(4.5, help="numeric labels: the strong judge keeps rows with label >= this"),
    weight_column: str | None = typer.Option(None, help="column of sample weights (>= 0)"),
    uniform_column: str | None = typer.Option(
        None,
        help="true/false column marking rows drawn uniformly from the data you will rate; held-out and "
        "calibration rows come only from these (the others only train)",
    ),
    holdout: float = typer.Option(0.2, help="fraction of uniform rows held out for the reported metrics"),
    seed: int = typer.Option(0, help="seed of the holdout split and the folds"),
    features: str = typer.Option(
        "rich",
        help="rich: MiniLM embeddings + length and hand features + TF-IDF "
        "terms of prompt and output (the shipped predictors); "
        "embeddings: the 774 embedding and length columns alone",
    ),
    head: str = typer.Option(
        "auto",
        help="auto: the best by cross-validated ROC-AUC of, for rich, "
        "ensemble-0.001-0.1-0.3 / ensemble-0.003-0.1-1.0 / tfidf-1.0-0.055, "
        "for embeddings, logistic-0.001/0.003/0.01; or a head name: "
        "logistic-C (C in 0.001..1) or mlp for embeddings, "
        "ensemble-C-C-C or tfidf-C-SCALE for rich",
    ),
    cache: Path | None = typer.Option(
        None,
        help=".npz file of embeddings keyed by example id, reused and extended across runs (encoding is the slow part)",
    ),
    name: str | None = typer.Option(None, help="predictor name in its card (default: the folder name)"),
    field: list[str] | None = typer.Option(None, "--field", help="map a field: instruction=COLUMN (repeatable)"),
) -> None:
    """Train a predictor of LABELS (frozen MiniLM embeddings, text features, a linear head) and save it to OUT.

    Use it with `alpagasus rate --judge predictor:OUT`."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.data import parse_field_map
    from alpagasus.distill import distill as run

    with user_errors():
        pred = run(
            labels,
            out,
            label=label,
            threshold=threshold,
            weight_column=weight_column,
            uniform_column=uniform_column,
            holdout=holdout,
            seed=seed,
            head=head,
            name=name,
            field_map=parse_field_map(field),
            cache=cache,
            log=lambda s: typer.echo(s, err=True),
            feature_set=features,
        )
    m = pred.card["metrics"]
    typer.echo(
        json.dumps(
            {
                "predictor": str(out),
                "judge": f"predictor:{out}",
                "id": f"predictor:{pred.name}@{pred.digest}",
                "head": m["cross_validation"]["chosen_head"],
                "holdout": m.get("holdout"),
                "holdout_length_only": m.get("holdout_length_only"),
            },
            indent=2,
        )
    )
