"""Late labels uploaded to the API on the real store: checked, written into the labels folder the
loop reads and stored at once (the next `rakuten monitor performance` stores nothing twice);
a file that is no labels file is refused and leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from src.config import load_params
from src.db.engine import make_engine
from src.db.models import LateLabel
from src.monitoring.loop import performance
from tests.trained_registry import Registry

LABELS = pd.DataFrame(
    {"prdtypecode": [10, 2583, 1560], "productid": [990_000_001, 990_000_002, 990_000_003]},
    index=[84916, 84917, 84918],
)


def _stored(store_url: str) -> list[tuple[int, int, str]]:
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(LateLabel.productid, LateLabel.prdtypecode, LateLabel.source)
            ).all()
    finally:
        engine.dispose()
    return sorted((int(p), int(c), s) for p, c, s in rows)


def test_uploaded_labels_are_stored_in_the_folder_the_loop_reads(
    uploader: TestClient, registry: Registry, incoming: Path, store_url: str
) -> None:
    answer = uploader.post("/labels", files={"y_file": ("Y_late.csv", LABELS.to_csv().encode())})

    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["labels"] == body["new"] == 3
    assert [p.name for p in (incoming / "labels").iterdir()] == [body["source"]]
    expected = [(p, c, body["source"]) for c, p in LABELS.itertuples(index=False)]
    assert _stored(store_url) == sorted(expected)
    engine = make_engine(store_url)
    try:
        later = performance(
            "champion",
            None,
            engine=engine,
            labels_dir=incoming / "labels",
            params=load_params(registry.params_file),
        )
    finally:
        engine.dispose()
    assert later["labels_arrived"] == {body["source"]: 0}  # stored once, at the upload
    assert len(_stored(store_url)) == 3


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (LABELS.drop(columns="productid"), "lacks column(s) productid"),
        (LABELS.assign(prdtypecode=[10, 7, 1560]), "[7] are no product type codes"),
        (LABELS.assign(productid=["a", "b", "c"]), "must be integers"),
    ],
)
def test_a_file_that_is_no_labels_file_is_refused_and_leaves_nothing(
    uploader: TestClient, incoming: Path, store_url: str, labels: pd.DataFrame, reason: str
) -> None:
    answer = uploader.post("/labels", files={"y_file": ("Y.csv", labels.to_csv().encode())})

    assert answer.status_code == 422 and reason in answer.json()["detail"], answer.text
    assert list((incoming / "labels").iterdir()) == []
    assert _stored(store_url) == []
