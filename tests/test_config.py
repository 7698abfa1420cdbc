"""Settings from the environment and ML parameters from params.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from src.config import (
    HUB_REPO_ID,
    HubSource,
    LocalSource,
    Params,
    Settings,
    SyntheticSource,
    TrainParams,
    at_revision,
    load_params,
    params_hash,
    parse_data_source,
)
from src.errors import RakutenError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hf", HubSource(HUB_REPO_ID, "main")),
        ("hf://someone/rakuten-mirror", HubSource("someone/rakuten-mirror", "main")),
        ("hf://someone/rakuten-mirror@v1.2", HubSource("someone/rakuten-mirror", "v1.2")),
        ("hf://a/b@0123abcd", HubSource("a/b", "0123abcd")),
        ("synthetic", SyntheticSource()),
    ],
)
def test_parse_data_source(value: str, expected: object) -> None:
    assert parse_data_source(value) == expected


def test_a_directory_is_a_local_source(tmp_path: Path) -> None:
    assert parse_data_source(str(tmp_path)) == LocalSource(tmp_path)


def test_a_revision_pins_a_hub_source_and_is_ignored_with_a_warning_for_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert at_revision(HubSource("a/b", "main"), "v2") == HubSource("a/b", "v2")
    assert at_revision(HubSource("a/b", "v1"), None) == HubSource("a/b", "v1")
    assert not caplog.records
    assert at_revision(SyntheticSource(), "v2") == SyntheticSource()
    assert at_revision(LocalSource(tmp_path), "v2") == LocalSource(tmp_path)
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert f"not the folder {tmp_path}" in caplog.text


@pytest.mark.parametrize("value", ["hf://only-owner", "hf://a/b@", "/no/such/dir", "s3://bucket"])
def test_a_bad_data_source_names_the_accepted_forms(value: str) -> None:
    with pytest.raises(ValueError, match="hf://OWNER/REPO"):
        parse_data_source(value)


def test_settings_come_from_rakuten_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAKUTEN_DATA_SOURCE", "synthetic")
    monkeypatch.setenv("RAKUTEN_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("RAKUTEN_PUSHGATEWAY_URL", "http://127.0.0.1:9091")
    settings = Settings()
    assert settings.source == SyntheticSource()
    assert settings.data_root == tmp_path
    assert settings.pushgateway_url == "http://127.0.0.1:9091"


def test_settings_read_a_dotenv_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RAKUTEN_DATABASE_URL=postgresql+psycopg://app@db/rakuten\n")
    assert Settings().database_url == "postgresql+psycopg://app@db/rakuten"


def test_a_bad_data_source_in_the_environment_fails_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAKUTEN_DATA_SOURCE", "ftp://nowhere")
    with pytest.raises(ValidationError, match="data_source"):
        Settings()


def test_every_setting_is_documented_in_env_example() -> None:
    documented = (PROJECT_ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"RAKUTEN_{name.upper()}=" in documented, name


def test_the_repository_params_file_is_valid() -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.synthetic.rows > 0


def test_an_unknown_parameter_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("synthetic:\n  rowz: 10\n")
    with pytest.raises(ValidationError, match="rowz"):
        load_params(path)


def test_a_missing_params_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RakutenError, match=r"nothing\.yaml"):
        load_params(tmp_path / "nothing.yaml")


def test_params_hash_is_canonical() -> None:
    assert params_hash(Params()) == params_hash(Params.model_validate({}))
    assert re.fullmatch(r"[0-9a-f]{64}", params_hash(Params()))
    other = Params(train=TrainParams(branches=("text_tfidf",)))
    assert params_hash(other) != params_hash(Params())
