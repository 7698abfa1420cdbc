"""DVC: the pipeline reproduces with `dvc repro`, and the S3 remote round-trips the data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """A real S3 API on 127.0.0.1 (moto's server), stopped after the test."""
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.e2e
def test_push_and_pull_through_the_committed_s3_remote(s3_endpoint: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = str(BIN / "dvc")
    _run(["git", "init", "-q"], repo, env)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    # The committed remote, pointed at the local S3 the way a deployment points it at MinIO.
    _run([dvc, "remote", "modify", "--local", "storage", "endpointurl", s3_endpoint], repo, env)
    bucket = _run([dvc, "remote", "list"], repo, env).split("s3://")[1].split("/")[0]
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    raw = repo / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "X_train_update.csv").write_text(",designation\n0,Peluche\n", encoding="utf-8")
    (raw / "photo.jpg").write_bytes(os.urandom(300_000))
    before = {p.name: _sha256(p) for p in raw.iterdir()}
    _run([dvc, "add", "data/raw"], repo, env)
    _run([dvc, "push"], repo, env)

    shutil.rmtree(raw)
    shutil.rmtree(repo / ".dvc" / "cache")
    _run([dvc, "pull"], repo, env)
    assert {p.name: _sha256(p) for p in raw.iterdir()} == before


@pytest.mark.slow
@pytest.mark.e2e
def test_dvc_repro_runs_the_pipeline_and_then_skips_what_did_not_change(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAKUTEN_DATA_SOURCE": "synthetic",
        "RAKUTEN_DATA_ROOT": "data",
    }
    _run(["git", "init", "-q"], repo, env)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copy(ROOT / "dvc.yaml", repo)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synthetic"].update(rows=300, test_rows=40, image_size=48)
    params["train"]["branches"] = ["text_tfidf"]  # the fast branch: the stages are the point
    params["text_tfidf"]["trials"] = 0
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    dvc = str(BIN / "dvc")

    _run([dvc, "repro"], repo, env)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"ingest", "make_dataset", "train@text_tfidf", "fuse", "evaluate"}
    for split in ("train", "val", "test", "unlabelled"):
        assert (repo / "data" / "processed" / f"{split}.parquet").is_file()
    report = json.loads((repo / "data" / "processed" / "quality_report.json").read_text())
    manifest = json.loads((repo / "data" / "raw" / "MANIFEST.json").read_text())
    assert manifest["version"] in json.dumps(report)  # the dataset records its raw version

    again = _run([dvc, "repro"], repo, env)
    for stage in ("make_dataset", "train@text_tfidf", "fuse", "evaluate"):
        assert f"Stage '{stage}' didn't change, skipping" in again
    assert yaml.safe_load((repo / "dvc.lock").read_text()) == lock

    params["make_dataset"]["test_fraction"] = 0.2
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    changed = _run([dvc, "repro"], repo, env)
    assert "Running stage 'make_dataset'" in changed
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"text_tfidf", "fused"}
