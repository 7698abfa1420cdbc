"""The prediction API on a real registry and a real store: what it answers, what it refuses, what
it records and counts, and how it follows the champion through a promotion and a rollback.

The model is trained once on a small synthetic catalogue (text and photo branches) and registered
in an embedded MLflow registry; the store is SQLite and PostgreSQL in turn.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import delete, select

from src.config import Settings, load_params
from src.data.io import read_raw_csv
from src.data.layout import TEST_IMAGE_DIR, X_TEST_FILE
from src.db.engine import make_engine
from src.db.models import ApiKey, ApiRequest, Base
from src.models.batch_predict import predict_batch
from src.models.branch import CLASSES
from src.models.data import photo_paths
from src.models.packaged import MODEL_NAME, load
from src.models.predict import model_inputs
from src.registry.lifecycle import CHAMPION, model_ref, promote, rollback, validate
from src.registry.tracking import tracking_client
from src.serving.app import create_app
from src.serving.schemas import MAX_PHOTO_BYTES
from tests.servers import free_port
from tests.serving.conftest import API_KEY_SECRET, api_settings, new_key
from tests.trained_registry import TEXT_PARAMS, Registry, trained_registry

# A photo-only model: the fused answer is the photo's, and uniform for a listing without one.
PHOTO_PARAMS: dict[str, Any] = {
    **TEXT_PARAMS,
    "train": {"branches": ["image_cnn"], "seed": 0},
    "image_cnn": {"image_size": 32, "conv_filters": [8, 16], "epochs": 1, "augment": False},
}


@pytest.fixture(scope="module")
def photo_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A photo model as @champion."""
    return trained_registry(tmp_path_factory.mktemp("photo"), PHOTO_PARAMS, versions=1)


def _listings(registry: Registry) -> pd.DataFrame:
    """Test listings of the synthetic catalogue, with their photo files where they have one."""
    raw = registry.paths.raw_dir
    frame = read_raw_csv(raw / X_TEST_FILE)
    frame["image_path"] = photo_paths(frame, raw / TEST_IMAGE_DIR)
    return frame


@pytest.fixture(scope="module")
def listings(registry: Registry) -> pd.DataFrame:
    """The text model's test listings."""
    return _listings(registry)


def _settings(registry: Registry, store_url: str) -> Settings:
    return api_settings(registry, store_url)


def _keyed(client: TestClient, store_url: str) -> TestClient:
    """The client, calling with a new key of scope predict."""
    client.headers["X-API-Key"] = new_key(store_url, "predict")
    return client


@pytest.fixture
def store(store_url: str) -> Iterator[str]:
    """The module's store, emptied after the test."""
    yield store_url
    engine = make_engine(store_url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    engine.dispose()


def _ready(client: TestClient) -> TestClient:
    """The client once its API has loaded its model (it loads it after start-up)."""
    deadline = time.monotonic() + 120
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ready").json()
        time.sleep(0.2)
    return client


@pytest.fixture
def client(registry: Registry, store: str) -> Iterator[TestClient]:
    """The API on the text model's registry and an empty store, started (model loaded)."""
    with TestClient(create_app(_settings(registry, store))) as started:
        yield _ready(_keyed(started, store))


def _product(listing: pd.Series, photo: bool = True) -> dict[str, Any]:
    """A listing as a /predict client sends it."""
    product: dict[str, Any] = {
        "productid": int(listing["productid"]),
        "designation": listing["designation"],
    }
    if isinstance(listing["description"], str):
        product["description"] = listing["description"]
    if photo and isinstance(listing["image_path"], str):
        product["image"] = base64.b64encode(Path(listing["image_path"]).read_bytes()).decode()
    return product


def _metrics(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The /metrics samples by (name, labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_64_products_are_one_model_call_answered_as_the_registered_model(
    client: TestClient, registry: Registry, listings: pd.DataFrame
) -> None:
    with_photo = listings[listings["image_path"].notna()]
    without_photo = listings[listings["image_path"].isna()]
    assert len(with_photo) >= 3 and len(without_photo) >= 2
    sent = pd.concat([with_photo, without_photo]).head(64)
    sent = pd.concat([sent] * (1 + 64 // len(sent))).head(64)  # 64, some listed twice

    response = client.post(
        "/predict", json={"products": [_product(row) for _, row in sent.iterrows()]}
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"]["name"] == MODEL_NAME
    assert answer["model"]["version"] == "1" and answer["model"]["alias"] == CHAMPION
    predictions = answer["predictions"]
    assert [p["productid"] for p in predictions] == [int(i) for i in sent["productid"]]
    # The API's fast path answers as MLflow's own loading of the registered model does.
    expected = load(f"models:/{MODEL_NAME}/1", registry.uri).predict(model_inputs(sent, None))
    assert [p["prdtypecode"] for p in predictions] == expected["prdtypecode"].tolist()
    assert [p["probability"] for p in predictions] == pytest.approx(
        expected["probability"].tolist(), abs=1e-6
    )
    for prediction, top3 in zip(predictions, expected["top3"], strict=True):
        assert prediction["top3"] == [
            {**t, "probability": pytest.approx(t["probability"], abs=1e-6)}
            for t in json.loads(top3)
        ]
        assert prediction["top3"][0]["prdtypecode"] == prediction["prdtypecode"]
    samples = _metrics(client)
    assert samples[("rakuten_api_batch_listings_count", frozenset())] == 1  # one model call
    assert samples[("rakuten_api_batch_listings_sum", frozenset())] == 64


def test_concurrent_requests_each_get_their_own_answer(
    client: TestClient, listings: pd.DataFrame
) -> None:
    sent = listings.head(12)
    products = [_product(row) for _, row in sent.iterrows()]
    alone = [client.post("/predict", json={"products": [p]}).json() for p in products]

    with ThreadPoolExecutor(len(products)) as pool:
        together = list(
            pool.map(lambda p: client.post("/predict", json={"products": [p]}).json(), products)
        )

    for one, other in zip(alone, together, strict=True):
        assert other["predictions"] == [
            {**p, "probability": pytest.approx(p["probability"], abs=1e-6), "top3": ANY}
            for p in one["predictions"]
        ]
    samples = _metrics(client)
    assert samples[("rakuten_api_batch_listings_sum", frozenset())] == 2 * len(products)
    assert samples[("rakuten_api_batch_listings_count", frozenset())] <= 2 * len(products)


def test_too_many_waiting_listings_answer_503_with_retry_after_and_are_counted(
    registry: Registry, store: str
) -> None:
    settings = _settings(registry, store).model_copy(update={"api_max_queued_listings": 1})
    with TestClient(create_app(settings)) as client:
        _ready(_keyed(client, store))
        two = {"products": [{"designation": "Lampe de chevet"}, {"designation": "Jeu de cartes"}]}

        refused = client.post("/predict", json=two)
        answered = client.post("/predict", json={"products": two["products"][:1]})

        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "RAKUTEN_API_MAX_QUEUED_LISTINGS" not in refused.text  # says why, not the setting
        assert "waiting to be scored" in refused.json()["detail"]
        assert answered.status_code == 200
        samples = _metrics(client)
        assert samples[("rakuten_api_overloaded_total", frozenset())] == 1
        labels = frozenset({"endpoint": "/predict", "method": "POST", "status": "503"}.items())
        assert samples[("rakuten_api_requests_total", labels)] == 1


def test_input_edges_are_refused_with_documented_statuses_never_500(client: TestClient) -> None:
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    refused = {
        "a GIF photo": {"designation": "Lampe", "image": base64.b64encode(gif.getvalue()).decode()},
        "a negative productid": {"designation": "Lampe", "productid": -1},
        "a productid over BIGINT": {"designation": "Lampe", "productid": 2**63},
    }
    for case, product in refused.items():
        response = client.post("/predict", json={"products": [product]})
        assert response.status_code == 422, case
    assert (
        "JPEG or PNG" in client.post("/predict", json={"products": [refused["a GIF photo"]]}).text
    )
    # One productid rule on every route.
    assert client.get("/products/-1/prediction").status_code == 422
    assert client.get(f"/products/{2**63}/prediction").status_code == 422
    # A lone surrogate is valid as a JSON escape, not as text: refused, and echoed without a 500.
    for field in ("designation", "description"):
        body = json.dumps({"products": [{"designation": "Lampe", field: "a\ud800b"}]})  # ASCII
        response = client.post(
            "/predict", content=body.encode(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert "unicode" in response.text
    # A body that is not UTF-8 JSON: 400, a status the OpenAPI document lists.
    response = client.post(
        "/predict", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    documented = client.get("/openapi.json").json()["paths"]
    assert "400" in documented["/predict"]["post"]["responses"]
    assert "400" in documented["/predict/upload"]["post"]["responses"]


def test_a_photo_sent_as_bytes_counts_as_the_photo_file_does(
    photo_registry: Registry, store: str
) -> None:
    listings = _listings(photo_registry)
    sent = pd.concat(
        [
            listings[listings["image_path"].notna()].head(3),
            listings[listings["image_path"].isna()].head(1),
        ]
    )
    products = [_product(row) for _, row in sent.iterrows()]

    with TestClient(create_app(_settings(photo_registry, store))) as client:
        answer = _ready(_keyed(client, store)).post("/predict", json={"products": products})

    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    expected = load(f"models:/{MODEL_NAME}/1", photo_registry.uri).predict(model_inputs(sent, None))
    assert [p["prdtypecode"] for p in predictions] == expected["prdtypecode"].tolist()
    assert [p["probability"] for p in predictions] == pytest.approx(
        expected["probability"].tolist(), abs=1e-6
    )
    # Without a photo this model has nothing to go on: a uniform answer.
    assert predictions[-1]["probability"] == pytest.approx(1 / len(CLASSES))
    for prediction in predictions[:3]:
        assert prediction["probability"] != pytest.approx(1 / len(CLASSES), abs=1e-9)


def test_each_call_is_recorded_with_its_answer(
    client: TestClient, listings: pd.DataFrame, store: str
) -> None:
    row = listings[listings["image_path"].notna()].iloc[0]
    product = _product(row)

    answer = client.post("/predict", json={"products": [product]}).json()
    assert client.app.state.service.recorder.flush(timeout=60)  # type: ignore[attr-defined]

    engine = make_engine(store)
    with engine.connect() as connection:
        recorded = connection.execute(select(ApiRequest)).one()
        key_id = connection.execute(select(ApiKey.id)).scalar_one()
    engine.dispose()
    assert recorded.endpoint == "/predict" and recorded.status_code == 200
    # The key that called, by its id: never the key itself.
    assert recorded.api_key_id == key_id
    assert client.headers["X-API-Key"] not in json.dumps([recorded.request, recorded.response])
    assert recorded.model_version_id is not None and recorded.duration_ms > 0
    assert recorded.response == answer
    stored = recorded.request["products"][0]
    assert stored["designation"] == product["designation"]
    # The photo is kept by fingerprint, not by its bytes.
    photo = base64.b64decode(product["image"])
    assert stored["image"]["bytes"] == len(photo) and len(stored["image"]["sha256"]) == 64


def test_calls_answered_together_are_all_recorded_by_shutdown(
    registry: Registry, listings: pd.DataFrame, store: str
) -> None:
    products = [_product(row, photo=False) for _, row in listings.head(12).iterrows()]
    with TestClient(create_app(_settings(registry, store))) as started:
        client = _ready(_keyed(started, store))
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(
                pool.map(lambda p: client.post("/predict", json={"products": [p]}), products)
            )
        assert all(answer.status_code == 200 for answer in answers)
    # The app has stopped: its recorder wrote what was still waiting before it ended.
    engine = make_engine(store)
    with engine.connect() as connection:
        recorded = connection.execute(select(ApiRequest.request)).scalars().all()
    engine.dispose()
    assert sorted(call["products"][0]["productid"] for call in recorded) == sorted(
        product["productid"] for product in products
    )


def _png(width: int, height: int) -> str:
    """A blank black-and-white PNG, base64: a few kB whatever its size in pixels."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("product", "reason"),
    [
        ({"designation": "   "}, "String should match pattern"),
        ({"description": "no title"}, "Field required"),
        ({"designation": "Lampe", "colour": "red"}, "Extra inputs are not permitted"),
        ({"designation": "Lampe", "image": "not base64!"}, "base64"),
        ({"designation": "Lampe", "image": base64.b64encode(b"plain text").decode()}, "photo"),
        ({"designation": "Lampe", "productid": "abc"}, "integer"),
        ({"designation": "Lampe", "image": _png(5000, 5000)}, "5000x5000 pixels; at most"),
        ({"designation": "Lampe", "image": _png(20000, 20000)}, "pixels"),  # a decompression bomb
    ],
)
def test_bad_listings_are_refused_with_the_reason(
    client: TestClient, product: dict[str, Any], reason: str
) -> None:
    response = client.post("/predict", json={"products": [product]})

    assert response.status_code == 422
    assert reason in json.dumps(response.json()["detail"])


def test_request_size_limits(client: TestClient) -> None:
    assert client.post("/predict", json={"products": []}).status_code == 422
    too_many = {"products": [{"designation": "Lampe de chevet"}] * 65}
    response = client.post("/predict", json=too_many)
    assert response.status_code == 413
    assert "at most 64" in response.json()["detail"]
    huge = base64.b64encode(b"\xff" * (MAX_PHOTO_BYTES + 1)).decode()
    response = client.post("/predict", json={"products": [{"designation": "x", "image": huge}]})
    assert response.status_code == 422 and "at most" in response.text


def test_bodies_too_large_or_of_unknown_length_are_refused_unread(
    registry: Registry, store: str
) -> None:
    settings = _settings(registry, store).model_copy(update={"api_max_request_mib": 0.01})
    with TestClient(create_app(settings)) as client:
        _keyed(client, store)
        big = {"products": [{"designation": "Lampe " * 2000}]}
        refused = client.post("/predict", json=big)
        assert refused.status_code == 413 and "RAKUTEN_API_MAX_REQUEST_MIB" in refused.text
        chunked = client.post("/predict", content=iter([b'{"products": []}']))
        assert chunked.status_code == 411
        assert client.get("/health").status_code == 200


def test_metrics_count_requests_and_predicted_types(client: TestClient) -> None:
    products = [{"designation": "Piscine tubulaire hors-sol"}, {"designation": "Jeu de cartes"}]
    codes = [
        p["prdtypecode"]
        for p in client.post("/predict", json={"products": products}).json()["predictions"]
    ]
    client.post("/predict", json={"products": [{"designation": " "}]})
    client.get("/no/such/route")
    client.request("XYZZY", "/health")  # any method name: one label for all the odd ones

    samples = _metrics(client)

    def count(endpoint: str, status: str, method: str = "POST") -> float:
        labels = frozenset({"endpoint": endpoint, "method": method, "status": status}.items())
        return samples[("rakuten_api_requests_total", labels)]

    assert count("/predict", "200") == 1 and count("/predict", "422") == 1
    assert count("unmatched", "404", "GET") == 1
    assert count("/health", "405", "other") == 1
    predicted = {
        dict(labels)["prdtypecode"]: value
        for (name, labels), value in samples.items()
        if name == "rakuten_api_predictions_total"
    }
    assert sum(predicted.values()) == 2 and set(predicted) == {str(code) for code in codes}
    assert samples[("rakuten_api_prediction_probability_count", frozenset())] == 2
    assert samples[("rakuten_api_model_loaded", frozenset())] == 1
    served = frozenset({"name": MODEL_NAME, "version": "1", "alias": CHAMPION}.items())
    assert samples[("rakuten_api_model_info", served)] == 1


def test_the_api_follows_promotion_and_rollback(client: TestClient, registry: Registry) -> None:
    assert client.get("/model").json()["version"] == "1"
    registry_client = tracking_client(registry.uri)
    gate = load_params(registry.params_file).gate
    validate(registry_client, registry.paths, gate, version="2")
    promote(registry_client, "auto", version="2", automatic=True, by="test")
    service = client.app.state.service  # type: ignore[attr-defined]
    try:
        service.slot.refresh()  # what the API does every RAKUTEN_API_REFRESH_SECONDS
        assert client.get("/model").json()["version"] == "2"
        answer = client.post("/predict", json={"products": [{"designation": "Lampe"}]}).json()
        assert answer["model"]["version"] == "2"
    finally:
        rollback(registry_client, by="test", reason="the test puts version 1 back")
    service.slot.refresh()
    assert client.get("/model").json()["version"] == "1"
    samples = _metrics(client)
    assert samples[("rakuten_api_model_swaps_total", frozenset())] == 3
    versions = [
        dict(labels)["version"]
        for (name, labels), value in samples.items()
        if name == "rakuten_api_model_info" and value == 1
    ]
    assert versions == ["1"]


def test_a_product_scored_in_batch_is_looked_up(
    client: TestClient, registry: Registry, store: str, tmp_path: Path
) -> None:
    registry_client = tracking_client(registry.uri)
    engine = make_engine(store)
    predict_batch(
        date(2026, 3, 1),
        model=model_ref(registry_client, CHAMPION),
        raw_dir=registry.paths.raw_dir,
        incoming_dir=None,
        predictions_dir=tmp_path,
        engine=engine,
        tracking_uri=registry.uri,
    )
    engine.dispose()
    productid = int(read_raw_csv(registry.paths.raw_dir / X_TEST_FILE)["productid"].iloc[0])

    found = client.get(f"/products/{productid}/prediction")

    assert found.status_code == 200, found.text
    stored = found.json()
    assert stored["productid"] == productid and stored["version"] == "1"
    assert stored["logical_date"] == "2026-03-01" and len(stored["top3"]) == 3
    assert client.get(f"/products/{2**63}/prediction").status_code == 422
    missing = client.get("/products/1/prediction")
    assert (
        missing.status_code == 404 and "no prediction for productid 1" in missing.json()["detail"]
    )


def test_without_a_champion_the_api_is_alive_but_not_ready(
    tmp_path: Path, store: str, mlflow_template: Path
) -> None:
    empty = tmp_path / "mlflow.db"
    empty.write_bytes(mlflow_template.read_bytes())
    settings = Settings(
        mlflow_tracking_uri=f"sqlite:///{empty}",
        database_url=store,
        api_key_secret=SecretStr(API_KEY_SECRET),
    )
    with TestClient(create_app(settings)) as client:
        _keyed(client, store)
        assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 60
        while (ready := client.get("/ready")).json()["problem"] == "not loaded yet":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert ready.status_code == 503
        assert ready.json()["problem"] == f"{MODEL_NAME} has no @champion: nothing to serve yet"
        refused = client.post("/predict", json={"products": [{"designation": "Lampe"}]})
        assert refused.status_code == 503 and "has no @champion" in refused.json()["detail"]
        assert _metrics(client)[("rakuten_api_model_loaded", frozenset())] == 0


def test_a_store_that_is_down_costs_the_record_not_the_answer(registry: Registry) -> None:
    nowhere = f"postgresql+psycopg://rakuten@127.0.0.1:{free_port()}/rakuten?connect_timeout=2"
    # With keys on, a key is checked in the store (test_auth.py: 503 then); here, the record.
    settings = _settings(registry, nowhere).model_copy(update={"api_auth": "off"})
    with TestClient(create_app(settings)) as client:
        answer = _ready(client).post("/predict", json={"products": [{"designation": "Lampe"}]})
        assert answer.status_code == 200
        assert client.app.state.service.recorder.flush(timeout=60)  # type: ignore[attr-defined]
        assert _metrics(client)[("rakuten_api_store_errors_total", frozenset())] == 1
        lookup = client.get("/products/42/prediction")
        assert lookup.status_code == 503 and "store is unavailable" in lookup.json()["detail"]


def test_a_registry_that_is_down_leaves_the_api_alive_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = Settings(
        mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
        database_url=f"sqlite:///{tmp_path / 'predictions.db'}",
        api_auth="off",
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 60
        while (ready := client.get("/ready").json())["problem"] == "not loaded yet":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert ready == {
            "ready": False,
            "model": None,
            "problem": "the model registry is unreachable (details in the API's log)",
        }
        assert client.post("/predict", json={"products": [{"designation": "x"}]}).status_code == 503
