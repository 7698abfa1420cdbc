"""`rakuten params`: a run's own copy of params.yaml with some values changed."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from src.config import load_params
from src.errors import RakutenError
from src.monitoring.push import monitored

app = typer.Typer(
    help="ML parameters (params.yaml): write a run's own copy with some values changed.",
    no_args_is_help=True,
)


@app.command("write")
def params_write(
    out: Path = typer.Option(..., help="Parameters file to write (YAML)."),
    assignments: list[str] = typer.Option(
        [],
        "--set",
        help="BLOCK.KEY=VALUE, the value in YAML (e.g. train.branches=[text_tfidf]); repeatable.",
    ),
) -> None:
    """Write RAKUTEN_PARAMS_FILE's parameters with some values changed, validated, to OUT.

    What a pipeline run trains with, when its trigger form changes some values; point
    RAKUTEN_PARAMS_FILE at OUT for the run's steps. Prints OUT, its params hash, and the
    branches to train split into CPU and GPU (neural) ones.
    """
    import yaml

    from src.config import override_params, params_hash
    from src.data.io import write_atomic
    from src.models.branch import ACCELERATED, BRANCHES

    with monitored("configure") as run:
        changes = {}
        for assignment in assignments:
            name, equals, value = assignment.partition("=")
            if not equals:
                raise typer.BadParameter(f"{assignment!r}: expected BLOCK.KEY=VALUE")
            changes[name.strip()] = yaml.safe_load(value)
        params = override_params(load_params(), changes)
        text = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        write_atomic(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        names = params.train.branches
        unknown = sorted(set(names) - set(BRANCHES))
        if unknown:
            raise RakutenError(
                f"unknown branch(es) {', '.join(unknown)}; known: {', '.join(BRANCHES)}"
            )
        summary = {
            "params_file": str(out),
            "params_sha256": params_hash(params),
            "changed": changes,
            "branches": {
                "cpu": [name for name in names if name not in ACCELERATED],
                "gpu": [name for name in names if name in ACCELERATED],
            },
        }
        run.summary(summary)
    typer.echo(json.dumps(summary))
