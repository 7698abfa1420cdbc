"""`rakuten db ...`: migrations, grants and the queries, as scripts and people call them."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from src.cli.main import app, run
from src.config import get_settings
from src.db.models import SCHEMA_REVISION
from tests.db.batches import StoreFn, store_known_batches


@pytest.fixture
def settings_from_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings re-read from the environment the test sets."""
    monkeypatch.delenv("RAKUTEN_DATABASE_ADMIN_URL", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture
def cli(engine: Engine, settings_from_env: pytest.MonkeyPatch) -> Any:
    """`rakuten` on the test's store."""
    settings_from_env.setenv("RAKUTEN_DATABASE_URL", engine.url.render_as_string(False))

    def invoke(*arguments: str) -> Result:
        result = CliRunner().invoke(app, ["db", *arguments], env={"COLUMNS": "200"})
        get_settings.cache_clear()
        return result

    return invoke


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_upgrade_then_grant_on_the_embedded_sqlite(
    settings_from_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'predictions.db'}"
    settings_from_env.setenv("RAKUTEN_DATABASE_URL", url)
    upgraded = CliRunner().invoke(app, ["db", "upgrade"])
    assert json_lines(upgraded) == [{"database": url, "from": None, "to": SCHEMA_REVISION}]
    granted = CliRunner().invoke(app, ["db", "grant"])
    assert json_lines(granted)[0]["roles"] is None


def test_the_queries_print_json_lines(cli: Any, store: StoreFn) -> None:
    known = store_known_batches(store)
    champion, challenger = known["champion"].batch_id, known["challenger"].batch_id

    distribution = json_lines(cli("distribution", "--date", "2026-03-01", "--version", "1"))
    assert [(row["prdtypecode"], row["products"]) for row in distribution] == [
        (10, 3),
        (40, 1),
        (50, 1),
        (2583, 1),
    ]
    assert json_lines(cli("distribution", "--batch", str(champion))) == distribution

    [by_date] = json_lines(
        cli("agreement", "--date", "2026-03-01", "--champion", "1", "--challenger", "2")
    )
    assert (by_date["common"], by_date["agreeing"], by_date["rate"]) == (5, 3, 0.6)
    assert len(by_date["by_class"]) == 4
    by_ids = cli(
        "agreement", "--champion-batch", str(champion), "--challenger-batch", str(challenger)
    )
    assert json_lines(by_ids) == [by_date]

    [latest] = json_lines(cli("latest", "--productid", "7", "--any-alias"))
    assert (latest["prdtypecode"], latest["version"], latest["alias"]) == (10, "2", "challenger")

    counts = json_lines(cli("counts"))
    assert [(row["version"], row["predictions"]) for row in counts] == [
        ("1", 7),
        ("2", 6),
        ("3", 0),
    ]
    assert [row["status"] for row in json_lines(cli("batches", "--date", "2026-03-01"))] == [
        "failed",
        "complete",
        "complete",
    ]


def test_the_queries_print_tables_for_people(cli: Any, store: StoreFn) -> None:
    store_known_batches(store)
    table = cli("distribution", "--date", "2026-03-01", "--version", "1", "--format", "table")
    assert table.exit_code == 0, table.output
    header, first, *_ = table.stdout.splitlines()
    assert header.split() == ["prdtypecode", "label", "products", "share", "mean_probability"]
    assert first.split() == ["10", "used", "books", "3", "0.5000", "0.8000"]

    versions = ["--champion", "1", "--challenger", "2"]
    agreement = cli("agreement", "--date", "2026-03-01", *versions, "--format", "table")
    assert "rate                 0.6000" in agreement.stdout
    assert "prdtypecode  label" in agreement.stdout

    latest = cli("latest", "--productid", "2", "--format", "table")
    assert "prdtypecode      1280" in latest.stdout


def test_a_batch_must_be_named(cli: Any) -> None:
    result = cli("distribution", "--date", "2026-03-01")
    assert result.exit_code == 2
    assert "give --batch, or --date and --version" in result.output


def test_a_missing_prediction_is_one_error_line(
    engine: Engine, settings_from_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_from_env.setenv("RAKUTEN_DATABASE_URL", engine.url.render_as_string(False))
    settings_from_env.setattr(sys, "argv", ["rakuten", "db", "latest", "--productid", "999"])
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: no prediction for productid 999 by a model used as champion"
    )
