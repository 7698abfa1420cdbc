"""Ingest: hub (real huggingface_hub client against a local hub), local and synthetic sources."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from src.cli.main import app
from src.config import (
    HUB_REPO_ID,
    HubSource,
    LocalSource,
    Params,
    SyntheticParams,
    SyntheticSource,
    parse_data_source,
)
from src.data.ingest import ingest, read_manifest
from src.data.layout import IMAGE_SETS, TEXT_FILES
from src.data.layout import MANIFEST_FILE as MANIFEST
from src.data.synth import synthesize
from src.errors import DataSourceError, RakutenError
from tests.data.hub_server import HubServer
from tests.servers import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PARAMS = Params()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        path.relative_to(root).as_posix(): _sha256(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _zip_images(images: Path, dest: Path, prefix: str = "", macosx: bool = False) -> Path:
    """Pack the photo folders of `images` as the hub's zip does, under `prefix`."""
    with zipfile.ZipFile(dest, "w") as archive:
        for image_set in IMAGE_SETS:
            archive.writestr(f"{prefix}{image_set}/", b"")
            for photo in sorted((images / image_set).iterdir()):
                archive.write(photo, f"{prefix}{image_set}/{photo.name}")
                if macosx:
                    archive.writestr(
                        f"__MACOSX/{prefix}{image_set}/._{photo.name}", b"\0\5\26\7mac"
                    )
        if macosx:
            archive.writestr(f"{prefix}.DS_Store", b"finder")
    return dest


def _repo_files(sample: Path, images_zip: Path) -> dict[str, Path]:
    """The hub repo's files: the sample's CSVs where they lie, and a photo zip."""
    return {**{name: sample / name for name in TEXT_FILES}, "images_low.zip": images_zip}


def _expected_photos(sample: Path) -> dict[str, str]:
    return {k: v for k, v in _tree(sample).items() if k.startswith("images/")}


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A local hub that the real huggingface_hub client talks to (HF_ENDPOINT), always stopped."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield server


@pytest.fixture
def sample_zip(rakuten_sample: Path, tmp_path: Path) -> Path:
    """The sample's photos zipped with `image_train/` at the top and a `__MACOSX/` folder."""
    return _zip_images(rakuten_sample / "images", tmp_path / "images_low.zip", macosx=True)


def test_hub_ingest_of_synthetic_data_with_the_zip_it_ships(
    hub_server: HubServer, tmp_path: Path
) -> None:
    generated = tmp_path / "generated"
    synthesize(generated, rows=300, test_rows=60, image_size=32, seed=5, images_zip=True)
    files = {name: generated / name for name in [*TEXT_FILES, "images_low.zip"]}
    commit = hub_server.add_commit("someone/rakuten-synthetic", files, refs=("main", "v1"))
    out = tmp_path / "raw"

    summary = ingest(parse_data_source("hf://someone/rakuten-synthetic@v1"), out, PARAMS)

    assert summary["changed"] is True and read_manifest(out)["source"]["commit"] == commit
    assert _tree(out) == {
        **{name: _sha256(generated / name) for name in TEXT_FILES},
        **_expected_photos(generated),
        MANIFEST: _sha256(out / MANIFEST),
    }


@pytest.mark.parametrize(("prefix", "macosx"), [("", True), ("images/", False)])
def test_hub_ingest_of_the_real_sample_in_either_zip_layout(
    hub_server: HubServer, rakuten_sample: Path, tmp_path: Path, prefix: str, macosx: bool
) -> None:
    images_zip = _zip_images(rakuten_sample / "images", tmp_path / "images.zip", prefix, macosx)
    commit = hub_server.add_commit(HUB_REPO_ID, _repo_files(rakuten_sample, images_zip))
    out = tmp_path / "data" / "raw"

    summary = ingest(parse_data_source("hf"), out, PARAMS)

    assert _tree(out) == {
        **{name: _sha256(rakuten_sample / name) for name in TEXT_FILES},
        **_expected_photos(rakuten_sample),
        MANIFEST: _sha256(out / MANIFEST),
    }
    manifest = read_manifest(out)
    assert manifest["source"] == {
        "kind": "hub",
        "endpoint": hub_server.url,
        "repo_id": HUB_REPO_ID,
        "repo_type": "dataset",
        "revision": "main",
        "commit": commit,
        "files": {
            name: {"sha256": _sha256(path), "size": path.stat().st_size}
            for name, path in _repo_files(rakuten_sample, images_zip).items()
        },
    }
    assert manifest["files"] == {
        name: {"sha256": _sha256(out / name), "size": (out / name).stat().st_size}
        for name in TEXT_FILES
    }
    assert {s: manifest["images"][s]["count"] for s in IMAGE_SETS} == {
        "image_train": 20,
        "image_test": 4,
    }
    content = {"files": manifest["files"], "images": manifest["images"]}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    assert manifest["version"] == hashlib.sha256(canonical).hexdigest() == summary["version"]
    assert summary["changed"] is True
    assert summary["images"] == {"image_train": 20, "image_test": 4}
    # The version names the content: the same bytes from a local copy have the same version.
    local = ingest(LocalSource(rakuten_sample), tmp_path / "local-raw", PARAMS)
    assert local["version"] == summary["version"]


def test_second_run_with_the_same_revision_downloads_and_unpacks_nothing(
    hub_server: HubServer, rakuten_sample: Path, sample_zip: Path, tmp_path: Path
) -> None:
    commit = hub_server.add_commit(HUB_REPO_ID, _repo_files(rakuten_sample, sample_zip))
    out = tmp_path / "raw"
    first = ingest(HubSource(), out, PARAMS)
    assert len(hub_server.downloads()) == 4
    written = {path: path.stat().st_ino for path in out.rglob("*")}
    before = len(hub_server.requests)

    again = ingest(HubSource(), out, PARAMS)

    assert again == {**first, "changed": False}
    assert hub_server.requests[before:] == [("GET", f"/api/datasets/{HUB_REPO_ID}/revision/main")]
    assert {path: path.stat().st_ino for path in out.rglob("*")} == written

    # A pinned commit that the snapshot already holds needs no request at all.
    before = len(hub_server.requests)
    pinned = ingest(parse_data_source(f"hf://{HUB_REPO_ID}@{commit}"), out, PARAMS)
    assert pinned["changed"] is False
    assert hub_server.requests[before:] == []

    # Without the snapshot, the files come from the hub cache: rebuilt, not downloaded again.
    shutil.rmtree(out)
    rebuilt = ingest(HubSource(), out, PARAMS)
    assert rebuilt["changed"] is True
    assert rebuilt["version"] == first["version"]
    assert len(hub_server.downloads()) == 4


def test_revision_pinning(
    hub_server: HubServer, rakuten_sample: Path, sample_zip: Path, tmp_path: Path
) -> None:
    repo = "someone/rakuten-mirror"
    v1 = hub_server.add_commit(repo, _repo_files(rakuten_sample, sample_zip), refs=("main", "v1"))
    shorter = tmp_path / "X_test_update.csv"
    lines = (rakuten_sample / "X_test_update.csv").read_text(encoding="utf-8").splitlines(True)
    shorter.write_text("".join(lines[:100]), encoding="utf-8")
    v2 = hub_server.add_commit(
        repo, {**_repo_files(rakuten_sample, sample_zip), "X_test_update.csv": shorter}
    )
    out = tmp_path / "raw"

    latest = ingest(parse_data_source(f"hf://{repo}"), out, PARAMS)
    assert read_manifest(out)["source"]["commit"] == v2
    assert _sha256(out / "X_test_update.csv") == _sha256(shorter)

    tagged = ingest(parse_data_source(f"hf://{repo}@v1"), out, PARAMS)
    manifest = read_manifest(out)
    assert (manifest["source"]["revision"], manifest["source"]["commit"]) == ("v1", v1)
    assert _sha256(out / "X_test_update.csv") == _sha256(rakuten_sample / "X_test_update.csv")
    assert tagged["changed"] is True
    assert tagged["version"] != latest["version"]

    by_commit = ingest(parse_data_source(f"hf://{repo}@{v1}"), out, PARAMS)
    assert by_commit == {**tagged, "changed": False}  # the tag's commit: the same snapshot


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hf://nobody/missing", "dataset repo nobody/missing not found"),
        (f"hf://{HUB_REPO_ID}@nope", f"revision 'nope' not found in dataset repo {HUB_REPO_ID}"),
    ],
)
def test_unknown_repo_or_revision_is_named(
    hub_server: HubServer,
    rakuten_sample: Path,
    sample_zip: Path,
    tmp_path: Path,
    source: str,
    message: str,
) -> None:
    hub_server.add_commit(HUB_REPO_ID, _repo_files(rakuten_sample, sample_zip))
    with pytest.raises(DataSourceError, match=message):
        ingest(parse_data_source(source), tmp_path / "raw", PARAMS)
    assert not (tmp_path / "raw").exists()


def test_a_corrupt_cached_download_is_refused(
    hub_server: HubServer, rakuten_sample: Path, sample_zip: Path, tmp_path: Path
) -> None:
    hub_server.add_commit(HUB_REPO_ID, _repo_files(rakuten_sample, sample_zip))
    ingest(HubSource(), tmp_path / "raw", PARAMS)
    (blob,) = (tmp_path / "hf-cache").glob(f"datasets--*/blobs/{_sha256(sample_zip)}")
    blob.write_bytes(b"not the zip")

    with pytest.raises(
        DataSourceError, match=r"images_low\.zip .* does not match the hub's sha256"
    ):
        ingest(HubSource(), tmp_path / "other-raw", PARAMS)


def test_a_repo_without_the_csvs_is_refused_and_one_without_photos_is_text_only(
    hub_server: HubServer, rakuten_sample: Path, tmp_path: Path
) -> None:
    text = {name: rakuten_sample / name for name in TEXT_FILES}
    hub_server.add_commit("someone/no-labels", {k: v for k, v in text.items() if k[0] == "X"})
    hub_server.add_commit("someone/text-only", text)

    with pytest.raises(DataSourceError, match=r"lacks Y_train_CVw08PX\.csv"):
        ingest(parse_data_source("hf://someone/no-labels"), tmp_path / "raw", PARAMS)
    summary = ingest(parse_data_source("hf://someone/text-only"), tmp_path / "raw", PARAMS)

    assert summary["images"] == {"image_train": 0, "image_test": 0}
    assert sorted(p.name for p in (tmp_path / "raw" / "images").iterdir()) == list(IMAGE_SETS)[::-1]


def test_unreachable_hub_is_a_data_source_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DataSourceError, match="cannot reach the HuggingFace hub") as raised:
        ingest(HubSource(), tmp_path / "raw", PARAMS)
    assert "\n" not in str(raised.value)


def test_unreachable_hub_fails_fast_with_one_clear_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
    }
    rakuten = Path(sys.executable).with_name("rakuten")
    started = time.monotonic()
    done = subprocess.run(
        [str(rakuten), "data", "ingest", "--source", "hf", "--out", str(tmp_path / "raw")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started

    assert done.returncode == 1
    assert elapsed < 15
    # One error line, after at most the step's INFO log lines (e.g. "metrics off"), no traceback.
    *logged, line = done.stderr.strip().splitlines()
    assert all(" INFO " in entry for entry in logged), logged
    assert line.startswith(f"error: cannot reach the HuggingFace hub at {env['HF_ENDPOINT']}")
    assert "Connection refused" in line
    assert "RAKUTEN_DATA_SOURCE=/path/to/dir" in line
    assert "--source synthetic" in line
    assert done.stdout == ""
    assert not (tmp_path / "raw").exists()


def test_local_directory_with_unpacked_photos_is_copied(
    rakuten_sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "raw"
    summary = ingest(LocalSource(rakuten_sample), out, PARAMS)

    assert {k: v for k, v in _tree(out).items() if k != MANIFEST} == {
        k: v for k, v in _tree(rakuten_sample).items() if k != "README.md"
    }
    photo = next((out / "images" / "image_train").iterdir())
    original = rakuten_sample / "images" / "image_train" / photo.name
    assert photo.stat().st_ino != original.stat().st_ino  # a copy, not a link to the source
    source = read_manifest(out)["source"]
    assert source["kind"] == "local"
    assert source["path"] == str(rakuten_sample.resolve())
    assert source["files"]["images/image_train"]["count"] == 20
    assert summary["changed"] is True
    assert ingest(LocalSource(rakuten_sample), out, PARAMS)["changed"] is False


def test_local_directory_with_photo_folders_at_the_top(
    rakuten_sample: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in TEXT_FILES:
        shutil.copy(rakuten_sample / name, source / name)
    for image_set in IMAGE_SETS:
        shutil.copytree(rakuten_sample / "images" / image_set, source / image_set)

    summary = ingest(LocalSource(source), tmp_path / "raw", PARAMS)

    assert (
        summary["version"] == ingest(LocalSource(rakuten_sample), tmp_path / "b", PARAMS)["version"]
    )
    assert sorted(read_manifest(tmp_path / "raw")["source"]["files"]) == sorted(
        [*TEXT_FILES, *IMAGE_SETS]
    )


def test_local_directory_with_a_zip_and_changes(rakuten_sample: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in TEXT_FILES:
        shutil.copy(rakuten_sample / name, source / name)
    _zip_images(rakuten_sample / "images", source / "images.zip", "images/")
    out = tmp_path / "raw"
    first = ingest(LocalSource(source), out, PARAMS)
    assert _expected_photos(rakuten_sample).items() <= _tree(out).items()
    assert read_manifest(out)["source"]["files"]["images.zip"]["sha256"] == _sha256(
        source / "images.zip"
    )

    with (source / "Y_train_CVw08PX.csv").open("a", encoding="utf-8") as labels:
        labels.write("99999,10\n")
    changed = ingest(LocalSource(source), out, PARAMS)

    assert changed["changed"] is True
    assert changed["version"] != first["version"]
    assert _sha256(out / "Y_train_CVw08PX.csv") == _sha256(source / "Y_train_CVw08PX.csv")


def test_local_directory_without_the_csvs_is_refused(rakuten_sample: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(rakuten_sample, source)
    (source / "Y_train_CVw08PX.csv").unlink()
    with pytest.raises(DataSourceError, match=r"lacks Y_train_CVw08PX\.csv"):
        ingest(LocalSource(source), tmp_path / "raw", PARAMS)


def test_a_zip_holding_a_photo_twice_or_no_zip_at_all_is_refused(
    rakuten_sample: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in TEXT_FILES:
        shutil.copy(rakuten_sample / name, source / name)
    both = _zip_images(rakuten_sample / "images", source / "images_low.zip")
    with zipfile.ZipFile(both, "a") as archive:
        photo = next((rakuten_sample / "images" / "image_test").iterdir())
        archive.write(photo, f"images/image_test/{photo.name}")
    with pytest.raises(DataSourceError, match=f"holds image_test/{photo.name} twice"):
        ingest(LocalSource(source), tmp_path / "raw", PARAMS)

    both.write_bytes(b"PK but not a zip")
    with pytest.raises(DataSourceError, match="is not a readable zip"):
        ingest(LocalSource(source), tmp_path / "raw", PARAMS)
    assert not (tmp_path / "raw").exists()


def test_a_damaged_snapshot_is_rebuilt(rakuten_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    first = ingest(LocalSource(rakuten_sample), out, PARAMS)
    intact = _tree(out)
    next((out / "images" / "image_train").iterdir()).unlink()
    assert ingest(LocalSource(rakuten_sample), out, PARAMS)["changed"] is True
    (out / "X_test_update.csv").write_text("truncated", encoding="utf-8")
    assert ingest(LocalSource(rakuten_sample), out, PARAMS)["changed"] is True

    assert {k: v for k, v in _tree(out).items() if k != MANIFEST} == {
        k: v for k, v in intact.items() if k != MANIFEST
    }
    assert read_manifest(out)["version"] == first["version"]


def test_failed_unpack_leaves_the_old_snapshot(
    rakuten_sample: Path, sample_zip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "raw"
    ingest(LocalSource(rakuten_sample), out, PARAMS)
    before = _tree(out)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in TEXT_FILES:
        shutil.copy(rakuten_sample / name, broken / name)
    data = bytearray(sample_zip.read_bytes())
    photo = sorted((rakuten_sample / "images" / "image_train").iterdir())[10].read_bytes()
    at = data.index(photo[1000:1100]) + 50
    data[at] ^= 0xFF  # the zip's index is fine; one photo's bytes fail their CRC
    (broken / "images_low.zip").write_bytes(bytes(data))

    with pytest.raises(DataSourceError, match=r"images_low\.zip is corrupt"):
        ingest(LocalSource(broken), out, PARAMS)

    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("raw")) == ["raw"]


_KILLING_RUN = """
import os, shutil, signal, sys
from pathlib import Path
from src.config import LocalSource, Params
from src.data import ingest as step

when, source, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if when == "unpack":  # in the middle of the photos
    copy, copied = step._copy_stream, []
    def copy_then_die(stream, dest):
        copied.append(copy(stream, dest))
        if len(copied) == 10:
            die()
        return copied[-1]
    step._copy_stream = copy_then_die
elif when == "swap":  # the old snapshot moved aside, the new one not yet in
    rename = Path.rename
    def rename_or_die(self, target):
        if self.name.startswith("raw.tmp-"):
            die()
        return rename(self, target)
    Path.rename = rename_or_die
else:  # the new snapshot in, the old one not yet removed
    rmtree = shutil.rmtree
    def rmtree_or_die(path, *args, **kwargs):
        if Path(path).name.startswith("raw.old-"):
            die()
        return rmtree(path, *args, **kwargs)
    shutil.rmtree = rmtree_or_die
step.ingest(LocalSource(source), out, Params())
"""


@pytest.mark.parametrize(
    ("when", "left", "found"),
    [
        ("unpack", {"raw", "raw.tmp"}, "old"),
        ("swap", {"raw.old", "raw.tmp"}, "old"),
        ("cleanup", {"raw", "raw.old"}, "new"),
    ],
)
def test_killed_run_leaves_the_old_data_or_the_new_never_a_mix(
    rakuten_sample: Path,
    sample_zip: Path,
    tmp_path: Path,
    when: str,
    left: set[str],
    found: str,
) -> None:
    new_source = tmp_path / "new"
    new_source.mkdir()
    for name in TEXT_FILES:
        (new_source / name).write_bytes((rakuten_sample / name).read_bytes()[:-200])
    shutil.copy(sample_zip, new_source / "images_low.zip")
    new = ingest(LocalSource(new_source), tmp_path / "new-raw", PARAMS)
    new_tree = _tree(tmp_path / "new-raw")
    out = tmp_path / "raw"
    old = ingest(LocalSource(rakuten_sample), out, PARAMS)
    old_tree = _tree(out)

    killed = subprocess.run(
        [sys.executable, "-c", _KILLING_RUN, when, str(new_source), str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=60,
    )

    assert killed.returncode == -signal.SIGKILL
    assert {p.name.split("-")[0] for p in tmp_path.glob("raw*")} == left
    snapshot = out if out.exists() else next(tmp_path.glob("raw.old-*"))
    tree = {k: v for k, v in _tree(snapshot).items() if k != MANIFEST}
    expected = old_tree if found == "old" else new_tree
    assert tree == {k: v for k, v in expected.items() if k != MANIFEST}
    # The next run cleans up and puts a snapshot left aside back.
    again = ingest(LocalSource(new_source), out, PARAMS)
    assert again["version"] == new["version"]
    assert again["changed"] is (found == "old")
    assert [p.name for p in tmp_path.glob("raw*")] == ["raw"]
    assert old["version"] != new["version"]


def test_synthetic_source(tmp_path: Path) -> None:
    params = Params(synthetic=SyntheticParams(rows=80, test_rows=20, image_size=16, seed=3))
    out = tmp_path / "raw"
    summary = ingest(SyntheticSource(), out, params)

    manifest = read_manifest(out)
    assert manifest["source"] == {"kind": "synthetic", "params": params.synthetic.model_dump()}
    for image_set in IMAGE_SETS:
        photos = list((out / "images" / image_set).iterdir())
        assert len(photos) == manifest["images"][image_set]["count"] == summary["images"][image_set]
    assert 0 < summary["images"]["image_train"] <= 80
    assert sorted(p.name for p in out.iterdir()) == sorted([*TEXT_FILES, "images", MANIFEST])
    assert ingest(SyntheticSource(), out, params)["changed"] is False

    text_only = Params(synthetic=SyntheticParams(rows=80, test_rows=20, images=False, seed=3))
    again = ingest(SyntheticSource(), out, text_only)
    assert again["changed"] is True
    assert again["images"] == {"image_train": 0, "image_test": 0}
    assert sorted(p.name for p in (out / "images").iterdir()) == ["image_test", "image_train"]
    assert not any((out / "images").rglob("*.jpg"))


def test_refuses_to_replace_what_is_not_a_snapshot(rakuten_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(RakutenError, match="is not a raw snapshot"):
        ingest(LocalSource(rakuten_sample), out, PARAMS)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_second_ingest_into_the_same_folder_fails_at_once(
    rakuten_sample: Path, tmp_path: Path
) -> None:
    with (tmp_path / ".raw.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RakutenError, match="another ingest is writing"):
            ingest(LocalSource(rakuten_sample), tmp_path / "raw", PARAMS)


def test_cli_prints_the_summary_as_json(rakuten_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    result = CliRunner().invoke(
        app, ["data", "ingest", "--source", str(rakuten_sample), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["version"] == read_manifest(out)["version"]
    assert summary["images"] == {"image_train": 20, "image_test": 4}


def test_cli_rejects_an_unknown_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["data", "ingest", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "raw")],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 2
    assert "Invalid value for '--source'" in result.output
    assert "nor an existing directory" in result.output
    assert not (tmp_path / "raw").exists()


def test_cli_ignores_a_revision_for_a_source_without_revisions_and_warns(
    rakuten_sample: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "raw"
    result = CliRunner().invoke(
        app,
        ["data", "ingest", "--source", str(rakuten_sample), "--revision", "v1", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert read_manifest(out)["source"]["kind"] == "local"
    assert "revision 'v1' ignored: only a hub source" in caplog.text
