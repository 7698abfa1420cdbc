"""Dataset uploads on the real data contract and store: what is stored (atomically, with its
manifest and quarantine), what is refused (a structural break, a path-traversing or bombing zip,
a body too large, a key without admin), and a validation dataset scored by the gate."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from src.cli.main import app
from src.config import get_settings
from src.data.contract import validate_raw
from src.data.ingest import read_manifest
from src.data.io import read_raw_csv
from src.data.layout import TRAIN_IMAGE_DIR, X_TRAIN_FILE, Y_TRAIN_FILE
from src.db.engine import make_engine
from src.db.models import Dataset
from src.errors import DataSourceError
from src.serving.app import create_app
from tests.serving.conftest import api_settings, new_key
from tests.trained_registry import Registry

ROWS = 60


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv().encode()


def _labelled(registry: Registry) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROWS labelled rows of the synthetic catalogue, two of them broken (blank title, a code
    that is no product type), as the hub lays them out."""
    raw = registry.paths.raw_dir
    x = read_raw_csv(raw / X_TRAIN_FILE).head(ROWS).copy()
    y = read_raw_csv(raw / Y_TRAIN_FILE).loc[x.index].copy()
    x.iloc[0, x.columns.get_loc("designation")] = "   "
    y.iloc[1, y.columns.get_loc("prdtypecode")] = "7"
    return x, y


def _photo_zip(registry: Registry, x: pd.DataFrame) -> bytes:
    """The rows' photos in a zip, in the hub's layout (under images/image_train/)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for _, row in x.iterrows():
            name = f"image_{row['imageid']}_product_{row['productid']}.jpg"
            path = registry.paths.raw_dir / TRAIN_IMAGE_DIR / name
            if path.is_file():
                archive.write(path, f"images/image_train/{name}")
    return buffer.getvalue()


def _upload(
    client: TestClient, purpose: str, x: bytes, y: bytes, photos: bytes | None = None
) -> Any:
    files = {"x_file": ("X.csv", x), "y_file": ("Y.csv", y)}
    if photos is not None:
        files["photos"] = ("photos.zip", photos)
    return client.post("/datasets", data={"purpose": purpose}, files=files)


def _left_in(incoming: Path) -> list[str]:
    return sorted(str(p.relative_to(incoming)) for p in incoming.rglob("*") if p.is_file())


def test_an_upload_is_checked_stored_with_its_manifest_and_listed(
    uploader: TestClient, registry: Registry, incoming: Path, store_url: str
) -> None:
    x, y = _labelled(registry)
    photos = _photo_zip(registry, x)

    stored = _upload(uploader, "validation", _csv(x), _csv(y), photos)

    assert stored.status_code == 201, stored.text
    record = stored.json()
    assert record["rows"] == ROWS - 2 and record["quarantined"] == 2
    assert record["photos"] == len(zipfile.ZipFile(io.BytesIO(photos)).namelist()) > 0
    folder = Path(record["path"])
    assert folder.parent == incoming / "datasets" / "validation"
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert manifest["sha256"] == record["sha256"] and manifest["rows"] == ROWS - 2
    assert set(manifest["files"]) >= {X_TRAIN_FILE, Y_TRAIN_FILE}
    quarantine = pd.read_csv(folder / "quarantine.csv")
    assert sorted(quarantine["reason"].str.contains("blank|product-type").tolist()) == [True] * 2
    assert not [p for p in (incoming / "datasets" / "validation").iterdir() if p != folder]

    listed = uploader.get("/datasets", params={"purpose": "validation"}).json()
    assert [d["id"] for d in listed] == [record["id"]]
    assert uploader.get("/datasets", params={"purpose": "training"}).json() == []
    engine = make_engine(store_url)
    with engine.connect() as connection:
        assert connection.execute(select(Dataset.api_key_id)).scalar_one() is not None
    engine.dispose()


@pytest.mark.parametrize(
    ("entry", "content", "reason"),
    [
        ("../../evil.jpg", b"x", "points outside the dataset"),
        ("/etc/evil.jpg", b"x", "points outside the dataset"),
        ("images/image_train/bomb.jpg", b"\0" * (20 * 1024 * 1024), "compressed over"),
    ],
)
def test_a_dangerous_zip_is_refused_and_leaves_nothing(
    uploader: TestClient,
    registry: Registry,
    incoming: Path,
    entry: str,
    content: bytes,
    reason: str,
) -> None:
    x, y = _labelled(registry)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(entry, content)

    refused = _upload(uploader, "training", _csv(x), _csv(y), buffer.getvalue())

    assert refused.status_code == 422 and reason in refused.json()["detail"]
    assert _left_in(incoming) == []
    assert uploader.get("/datasets").json() == []


def test_a_structural_break_is_named_and_nothing_is_stored(
    uploader: TestClient, registry: Registry, incoming: Path
) -> None:
    x, y = _labelled(registry)
    refused = _upload(uploader, "training", _csv(x.drop(columns=["designation"])), _csv(y))
    assert refused.status_code == 422 and "designation" in refused.json()["detail"]
    bad_purpose = _upload(uploader, "fun", _csv(x), _csv(y))
    assert bad_purpose.status_code == 422
    assert _left_in(incoming) == []


def test_uploads_need_admin_and_fit_the_upload_limit(
    registry: Registry, store_url: str, incoming: Path
) -> None:
    x, y = _labelled(registry)
    settings = api_settings(registry, store_url, incoming_dir=incoming, api_max_upload_mib=0.001)
    with TestClient(create_app(settings)) as client:
        predict = {"X-API-Key": new_key(store_url, "predict")}
        files = {"x_file": ("X.csv", _csv(x)), "y_file": ("Y.csv", _csv(y))}
        refused = client.post(
            "/datasets", data={"purpose": "training"}, files=files, headers=predict
        )
        assert refused.status_code in (403, 413)
        admin = {"X-API-Key": new_key(store_url, "admin")}
        too_big = client.post("/datasets", data={"purpose": "training"}, files=files, headers=admin)
        assert too_big.status_code == 413 and "RAKUTEN_API_MAX_UPLOAD_MIB" in too_big.text
        small = client.post("/datasets", data={"purpose": "x"}, headers=predict)
        assert small.status_code == 403


def test_the_gate_scores_an_uploaded_validation_dataset(
    uploader: TestClient, registry: Registry
) -> None:
    x, y = _labelled(registry)
    dataset = _upload(uploader, "validation", _csv(x), _csv(y), _photo_zip(registry, x)).json()
    training = _upload(uploader, "training", _csv(x), _csv(y)).json()
    assert uploader.post("/models/1/validate", json={"dataset_id": 999}).status_code == 404
    wrong = uploader.post("/models/1/validate", json={"dataset_id": training["id"]})
    assert wrong.status_code == 422 and "uploaded for training" in wrong.json()["detail"]

    started = uploader.post("/models/1/validate", json={"dataset_id": dataset["id"]})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 300
    while (job := uploader.get(f"/jobs/{started.json()['id']}").json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert job["status"] == "succeeded", job
    rows = job["result"]["rows"]
    assert rows["supplied"] == ROWS - 2 and rows["pinned_test"] > 0, rows


def test_a_training_upload_joins_the_catalogue_at_the_next_ingest(
    uploader: TestClient,
    registry: Registry,
    incoming: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = registry.paths.raw_dir
    x, y = _labelled(registry)
    # New products: the catalogue's rows under other ids, their photos renamed to match.
    new_x = x.assign(
        productid=(x["productid"].astype(int) + 10**8).astype(str),
        imageid=(x["imageid"].astype(int) + 10**8).astype(str),
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for (_, old), (_, new) in zip(x.iterrows(), new_x.iterrows(), strict=True):
            photo = raw / TRAIN_IMAGE_DIR / f"image_{old['imageid']}_product_{old['productid']}.jpg"
            if photo.is_file():
                archive.write(
                    photo, f"image_train/image_{new['imageid']}_product_{new['productid']}.jpg"
                )
    uploaded = _upload(uploader, "training", _csv(new_x), _csv(y), buffer.getvalue()).json()
    _upload(uploader, "validation", _csv(new_x), _csv(y))  # not for training: ingest leaves it

    monkeypatch.setenv("RAKUTEN_INCOMING_DIR", str(incoming))
    get_settings.cache_clear()
    out = tmp_path / "raw"
    command = ["data", "ingest", "--source", str(raw), "--out", str(out)]
    try:
        first, second = (CliRunner().invoke(app, command) for _ in range(2))
        (Path(uploaded["path"]) / Y_TRAIN_FILE).write_text(",prdtypecode\n0,10\n")
        tampered = CliRunner().invoke(app, command)
    finally:
        get_settings.cache_clear()

    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["changed"] is True
    assert summary["source"]["datasets"] == [
        {"name": Path(uploaded["path"]).name, "sha256": uploaded["sha256"], "rows": ROWS - 2}
    ]
    source_x, snapshot_x = read_raw_csv(raw / X_TRAIN_FILE), read_raw_csv(out / X_TRAIN_FILE)
    assert len(snapshot_x) == len(source_x) + ROWS
    added = snapshot_x.iloc[len(source_x) :]
    assert added["productid"].tolist() == new_x["productid"].tolist()
    assert added.index.astype(int).min() > source_x.index.astype(int).max()
    photos = read_manifest(out)["images"]["image_train"]["count"]
    assert photos == len(list((raw / TRAIN_IMAGE_DIR).iterdir())) + uploaded["photos"]
    # The snapshot's contract sets aside the upload's two broken rows, as the upload did.
    checked = validate_raw(snapshot_x, read_raw_csv(out / Y_TRAIN_FILE), x_name=X_TRAIN_FILE)
    assert set(new_x["productid"]) - set(checked.valid["productid"].astype(str)) == set(
        new_x["productid"].iloc[:2]
    )
    assert json.loads(second.stdout.strip().splitlines()[-1])["changed"] is False
    assert isinstance(tampered.exception, DataSourceError)
    assert "is not the file its MANIFEST.json describes" in str(tampered.exception)
    assert read_manifest(out)["version"] == summary["version"]  # the snapshot is kept
