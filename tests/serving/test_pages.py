"""The pages in a real headless Chromium, against the API served by uvicorn: a person signs in
with a key, classifies a listing with its photo and reads the top 3; an admin gates and promotes
a version on the models page, then rolls it back. Screenshots go to reports/ui/. Cookie flags
and CSRF refusals are checked over HTTP."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from src.data.io import read_raw_csv
from src.data.layout import TEST_IMAGE_DIR, X_TEST_FILE, X_TRAIN_FILE, Y_TRAIN_FILE
from src.models.data import photo_paths
from src.serving.app import create_app
from src.serving.pages import SESSION_COOKIE
from tests.browser import screenshot, submit
from tests.servers import free_port, healthy
from tests.serving.conftest import api_settings, new_key
from tests.trained_registry import Registry, kept_as_found

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(registry: Registry, store_url: str) -> Iterator[str]:
    """The API with its pages, served by uvicorn in a thread on a free port."""
    port = free_port()
    config = uvicorn.Config(
        create_app(api_settings(registry, store_url)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not healthy(url, "/ready"):
            assert time.monotonic() < deadline and thread.is_alive(), "the API never got ready"
            time.sleep(0.3)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _photo(registry: Registry) -> Path:
    """A test listing's photo file, as a person would pick it."""
    raw = registry.paths.raw_dir
    listings = read_raw_csv(raw / X_TEST_FILE)
    paths = photo_paths(listings, raw / TEST_IMAGE_DIR)
    return Path(next(path for path in paths if isinstance(path, str)))


def _sign_in(driver: webdriver.Chrome, site: str, key: str, page: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{site}{page}")
    assert "/ui/login" in driver.current_url  # no session: to the sign-in page first
    driver.find_element(By.ID, "key").send_keys(key)
    submit(driver, "sign-in")
    WebDriverWait(driver, 30).until(lambda d: "/ui/login" not in d.current_url)
    assert driver.current_url.endswith(page)


def test_a_person_signs_in_and_classifies_a_listing_with_its_photo(
    chromium: webdriver.Chrome, site: str, store_url: str, registry: Registry
) -> None:
    driver = chromium
    driver.delete_all_cookies()
    driver.get(f"{site}/ui/login")
    driver.find_element(By.ID, "key").send_keys("not-a-key")
    submit(driver, "sign-in")
    assert "Unknown or revoked key" in driver.find_element(By.ID, "error").text
    screenshot(driver, "login")

    _sign_in(driver, site, new_key(store_url, "predict", "Camille"), "/ui/predict")
    driver.find_element(By.ID, "designation").send_keys("Piscine tubulaire hors-sol 300 x 200 cm")
    driver.find_element(By.ID, "description").send_keys("Structure acier, liner PVC renforcé.")
    driver.find_element(By.ID, "photo-file").send_keys(str(_photo(registry)))
    submit(driver, "classify")

    answer = WebDriverWait(driver, 60).until(
        expected_conditions.presence_of_element_located((By.ID, "answer"))
    )
    rows = answer.find_elements(By.CSS_SELECTOR, "#top3 tr")[1:]
    assert len(rows) == 3
    probabilities = [float(row.find_elements(By.TAG_NAME, "td")[2].text.split()[0]) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < probabilities[0] <= 100
    photo = driver.find_element(By.ID, "photo")
    assert photo.get_attribute("src").startswith("data:image;base64,")
    assert driver.execute_script("return arguments[0].naturalWidth", photo) > 0
    assert "Camille" in driver.find_element(By.TAG_NAME, "header").text
    screenshot(driver, "predict")

    driver.get(f"{site}/ui/models")  # a predict key is no admin
    assert "lacks the scope 'admin'" in driver.page_source


def test_an_admin_gates_and_promotes_on_the_models_page(
    chromium: webdriver.Chrome, site: str, store_url: str, registry: Registry
) -> None:
    with kept_as_found(registry):
        _gate_promote_and_roll_back(chromium, site, store_url)


def _gate_promote_and_roll_back(driver: webdriver.Chrome, site: str, store_url: str) -> None:
    _sign_in(driver, site, new_key(store_url, "admin", "Dominique"), "/ui/models")
    assert "@champion" in driver.find_element(By.ID, "version-1").text
    screenshot(driver, "models")

    submit(driver, "validate-2")
    assert "Gate of version 2 started" in driver.find_element(By.ID, "flash").text
    deadline = time.monotonic() + 300
    while "passed" not in driver.find_element(By.ID, "version-2").text:
        assert time.monotonic() < deadline, driver.find_element(By.ID, "version-2").text
        time.sleep(1)
        driver.refresh()

    submit(driver, "promote-2")
    try:
        assert "Version 2 is now champion" in driver.find_element(By.ID, "flash").text
        assert "@champion" in driver.find_element(By.ID, "version-2").text
        assert "Dominique (API key" in driver.find_element(By.ID, "history").text
        screenshot(driver, "models-promoted")
    finally:
        submit(driver, "rollback")
    assert "Champion back to version 1" in driver.find_element(By.ID, "flash").text
    assert "@champion" in driver.find_element(By.ID, "version-1").text


def test_an_admin_uploads_a_dataset_on_the_datasets_page(
    chromium: webdriver.Chrome, site: str, store_url: str, registry: Registry, tmp_path: Path
) -> None:
    raw = registry.paths.raw_dir
    x = read_raw_csv(raw / X_TRAIN_FILE).head(30)
    y = read_raw_csv(raw / Y_TRAIN_FILE).loc[x.index]
    x.to_csv(tmp_path / "X.csv")
    y.to_csv(tmp_path / "Y.csv")
    driver = chromium
    _sign_in(driver, site, new_key(store_url, "admin", "Dominique"), "/ui/datasets")

    Select(driver.find_element(By.ID, "purpose")).select_by_value("validation")
    driver.find_element(By.ID, "x-file").send_keys(str(tmp_path / "X.csv"))
    driver.find_element(By.ID, "y-file").send_keys(str(tmp_path / "Y.csv"))
    submit(driver, "upload")

    flash = WebDriverWait(driver, 60).until(
        expected_conditions.presence_of_element_located((By.ID, "flash"))
    )
    assert re.search(r"Dataset \d+ stored: \d+ rows, \d+ quarantined, 0 photos", flash.text)
    assert "validation" in driver.find_element(By.ID, "datasets").text
    screenshot(driver, "datasets")


def test_the_session_cookie_is_httponly_strict_and_every_form_needs_its_csrf_token(
    registry: Registry, store_url: str
) -> None:
    key = new_key(store_url, "predict")
    with TestClient(create_app(api_settings(registry, store_url))) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert client.get("/ui/predict", follow_redirects=False).status_code == 303
        page = client.get("/ui/login")
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]

        no_token = client.post("/ui/login", data={"key": key}, follow_redirects=False)
        assert no_token.status_code == 422  # the field is required
        stale = client.post(
            "/ui/login", data={"key": key, "csrf_token": "stale"}, follow_redirects=False
        )
        assert stale.status_code == 403
        signed = client.post(
            "/ui/login", data={"key": key, "csrf_token": token}, follow_redirects=False
        )
        assert signed.status_code == 303 and key not in signed.headers["set-cookie"]
        # Signing in makes a new session with a new token: the old one is refused.
        refused = client.post(
            "/ui/predict", data={"designation": "Lampe", "csrf_token": token}, files={}
        )
        assert refused.status_code == 403
        fresh = client.get("/ui/predict").text.split('name="csrf_token" value="')[1].split('"')[0]
        answered = client.post(
            "/ui/predict", data={"designation": "Lampe de chevet", "csrf_token": fresh}
        )
        assert answered.status_code == 200 and 'id="top3"' in answered.text
