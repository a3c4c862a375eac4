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


@app.command("distill-pairwise")
def distill_pairwise_cmd(
    reference: list[Path] = typer.Argument(
        ..., help="AlpacaEval annotation file(s) (JSON list or JSONL, .gz too), e.g. the shared GPT-4 dev verdicts"
    ),
    out: Path = typer.Option(
        ..., "-o", "--output", help="folder to write the pairwise judge to (pairwise.npz, pairwise.json)"
    ),
    folds: int = typer.Option(4, min=2, help="groups the judged models and the questions are each dealt into"),
    seed: int = typer.Option(0, help="seed of the split"),
    holdout_fold: int = typer.Option(
        0, help="the fold whose models AND questions the saved judge never sees (its pairs: heldout.jsonl.gz); -1: none"
    ),
    cache: Path | None = typer.Option(
        None, help="folder of embedding chunks (emb_*.npz), reused and extended (encoding is the slow part)"
    ),
    name: str | None = typer.Option(None, help="the judge's name in its card (default: the folder name)"),
    heldout: Path | None = typer.Option(
        None, help="where to write the held-out fold's pairs (AlpacaEval JSONL; default: OUT/heldout.jsonl.gz)"
    ),
) -> None:
    """Train the free pairwise judge (question + both answers) on published verdicts; use it with
    `compare --judge pairwise:OUT`. Prints its figures on models and questions it was not trained on."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.distill.pairwise import distill_pairwise

    with user_errors():
        model, card = distill_pairwise(
            reference,
            out,
            folds=folds,
            seed=seed,
            holdout_fold=None if holdout_fold < 0 else holdout_fold,
            cache=cache,
            name=name,
            heldout=heldout,
            log=lambda s: typer.echo(s, err=True),
        )
    typer.echo(
        json.dumps(
            {
                "judge": f"pairwise:{out}",
                "id": f"pairwise:{model.name}@{model.digest}",
                "tie_band": model.tie_band,
                "figures": card["figures"],
            },
            indent=2,
        )
    )
