"""Ingest: turn a data source into a versioned raw snapshot (data/raw) with a manifest.

Whatever the source, the snapshot has one layout: the three CSVs at the top and the photos under
`images/image_train/` and `images/image_test/`. `MANIFEST.json` records where it came from (hub
commit, local path or synthetic parameters, and the sha256 of each file taken from the source)
and what it holds (sha256 and size of each CSV; count, bytes and digest of each photo folder).
The version id is the sha256 of what it holds, so the same bytes get the same version wherever
they came from; later steps record it.

A snapshot is built in a sibling folder and swapped in by renames, so a reader finds the old
snapshot or the new one, never a mix; a run killed between the two renames leaves the old one
aside and the next run puts it back. Photos of a local source are copied, not hard-linked: a link
shares the source's inode, so an edit of the source in place would silently change the snapshot
under its manifest, and every byte has to be read for its digest anyway.

Labelled datasets uploaded for training (`POST /datasets` with purpose `training`, stored under
`RAKUTEN_INCOMING_DIR/datasets/training/`) are added to the snapshot's train files: their rows
after the source's, renumbered after its last row id, their photos beside the source's (a photo
the source already has keeps the source's bytes). The manifest's source lists them by their own
manifest's sha256, so a new upload makes a new snapshot and an unchanged set is still a skip.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, NamedTuple, TypeVar

import pandas as pd
from tqdm import tqdm

from src.config import DataSource, HubSource, LocalSource, Params, SyntheticSource
from src.data import hub
from src.data.io import RawDataError, read_raw_csv
from src.data.layout import (
    IMAGE_SETS,
    IMAGE_ZIPS,
    IMAGES_DIR,
    MANIFEST_FILE,
    TEXT_FILES,
    TRAIN_IMAGE_DIR,
    TRAINING_DATASETS_DIR,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
)
from src.errors import DataSourceError, RakutenError

logger = logging.getLogger(__name__)

MANIFEST_FORMAT: Final = 1

# A photo in the images zip, in either layout seen; `__MACOSX/...` and other entries do not match.
_ZIP_PHOTO: Final = re.compile(r"^(?:images/)?(image_train|image_test)/([^/]+)$")
_COMMIT: Final = re.compile(r"^[0-9a-f]{40}$")
_CHUNK: Final = 1 << 20
_BAR_MIN_BYTES: Final = 64 << 20

_T = TypeVar("_T")
_R = TypeVar("_R")
Manifest = dict[str, Any]
_TRAIN_SET: Final = IMAGE_SETS[0]


class _Blob(NamedTuple):
    sha256: str
    size: int


class _Photo(NamedTuple):
    image_set: str
    name: str
    blob: _Blob


@dataclass(frozen=True)
class _Inputs:
    """A source's files on this machine: the CSVs and the photos, zipped or unpacked."""

    text: dict[str, Path]
    images_zip: Path | None
    image_dirs: dict[str, Path]


class _StoppedError(Exception):
    """A worker gave up because another one failed."""


# What filling a snapshot folder yields: the CSVs' blobs by name, and the photos.
_Content = tuple[dict[str, dict[str, Any]], list[_Photo]]


def ingest(
    source: DataSource, out_dir: Path, params: Params, datasets: Sequence[Path] = ()
) -> dict[str, Any]:
    """Make `out_dir` a raw snapshot of `source` plus the uploaded training `datasets` (folders
    that `training_datasets` lists); an unchanged source and set of datasets writes nothing."""
    out_dir = out_dir.absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    added = _Added(list(datasets))
    with _locked(out_dir):
        _recover(out_dir)
        _check_replaceable(out_dir)
        current = _current_manifest(out_dir)
        match source:
            case HubSource():
                manifest, changed = _ingest_hub(source, out_dir, current, added)
            case LocalSource():
                manifest, changed = _ingest_local(source, out_dir, current, added)
            case SyntheticSource():
                manifest, changed = _ingest_synthetic(params, out_dir, current, added)
    if not changed:
        logger.info("raw snapshot %s is up to date (version %s)", out_dir, manifest["version"])
    return {
        "out": str(out_dir),
        "version": manifest["version"],
        "changed": changed,
        "source": {k: v for k, v in manifest["source"].items() if k != "files"},
        "images": {name: manifest["images"][name]["count"] for name in IMAGE_SETS},
    }


def training_datasets(incoming: Path) -> list[Path]:
    """The uploaded training datasets under `incoming`, oldest first (their folder names start
    with the upload's time); an upload still being written (a hidden folder) is not one."""
    root = incoming / TRAINING_DATASETS_DIR
    if not root.is_dir():
        return []
    return sorted(
        entry
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and (entry / MANIFEST_FILE).is_file()
    )


class _Added:
    """The uploaded datasets a snapshot adds to its source: how the manifest names them, and
    how they are added to a filled snapshot folder."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.listed = [_dataset_entry(folder) for folder in folders]

    def provenance(self, source: Manifest) -> Manifest:
        """The source's provenance, with the datasets when there are any (a snapshot without
        uploads keeps the provenance it always had)."""
        return {**source, "datasets": self.listed} if self.listed else source

    def fill(self, fill: Callable[[Path], _Content]) -> Callable[[Path], _Content]:
        """`fill`, then the datasets added to what it wrote."""
        if not self.folders:
            return fill

        def filled(tmp: Path) -> _Content:
            files, photos = fill(tmp)
            present = {p.name for p in photos if p.image_set == _TRAIN_SET}
            photos += _add_datasets(self.folders, tmp, present)
            for name in (X_TRAIN_FILE, Y_TRAIN_FILE):
                files[name] = _hash_file(tmp / name)._asdict()
            return files, photos

        return filled


def _dataset_entry(folder: Path) -> dict[str, Any]:
    """How a snapshot's manifest names an uploaded dataset: its folder and manifest's sha256,
    after checking that its CSVs are the bytes its manifest describes."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        for name in (X_TRAIN_FILE, Y_TRAIN_FILE):
            if _hash_file(folder / name).sha256 != manifest["files"][name]["sha256"]:
                raise DataSourceError(
                    f"{folder / name} is not the file its {MANIFEST_FILE} describes; "
                    "upload the dataset again or remove its folder"
                )
        return {"name": folder.name, "sha256": manifest["sha256"], "rows": manifest["rows"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataSourceError(f"{folder} is not a readable uploaded dataset ({error})") from error


def _add_datasets(folders: list[Path], tmp: Path, present: set[str]) -> list[_Photo]:
    """Append the uploaded datasets' rows to the snapshot's train CSVs (read and written once),
    each renumbered after the last row id, and copy their photos that the snapshot lacks (the
    names in `present`); the photos copied."""
    try:
        x, y = read_raw_csv(tmp / X_TRAIN_FILE), read_raw_csv(tmp / Y_TRAIN_FILE)
        start = int(x.index.astype(int).max()) + 1 if len(x) else 0
    except (RawDataError, ValueError) as error:
        raise DataSourceError(
            f"cannot add the uploaded datasets to the snapshot: {error}"
        ) from error
    xs, ys, copied = [x], [y], []
    for folder in folders:
        try:
            new_x = read_raw_csv(folder / X_TRAIN_FILE)
            new_y = read_raw_csv(folder / Y_TRAIN_FILE)
        except RawDataError as error:
            raise DataSourceError(
                f"cannot add the uploaded dataset {folder.name}: {error}"
            ) from error
        renumbered = {old: str(start + i) for i, old in enumerate(new_x.index)}
        start += len(new_x)
        xs.append(new_x.set_axis(new_x.index.map(renumbered)))
        ys.append(new_y.set_axis(new_y.index.map(renumbered)))
        images = folder / TRAIN_IMAGE_DIR
        photos = _list_photos({_TRAIN_SET: images}) if images.is_dir() else []
        added = _copy_photos([p for p in photos if p[1].name not in present], tmp / IMAGES_DIR)
        present |= {photo.name for photo in added}
        copied += added
        logger.info(
            "added the uploaded dataset %s: %d rows, %d photos (%d the snapshot already had)",
            folder.name,
            len(new_x),
            len(added),
            len(photos) - len(added),
        )
    pd.concat(xs).to_csv(tmp / X_TRAIN_FILE)
    pd.concat(ys).to_csv(tmp / Y_TRAIN_FILE)
    return copied


def read_manifest(out_dir: Path) -> Manifest:
    """The manifest of the raw snapshot in `out_dir` (DataSourceError when there is none)."""
    path = out_dir / MANIFEST_FILE
    try:
        manifest: Manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataSourceError(
            f"{out_dir} is not a raw snapshot: run `rakuten data ingest`"
        ) from None
    return manifest


def _ingest_hub(
    source: HubSource, out: Path, current: Manifest | None, added: _Added
) -> tuple[Manifest, bool]:
    """Download the repo's files at the resolved commit (hub cache) and build a snapshot."""
    pinned = _COMMIT.match(source.revision) is not None
    if current is not None and current["source"].get("datasets", []) != added.listed:
        current = None  # the uploads changed: a new snapshot, whatever the hub holds
    if current is not None and pinned and _is_hub_commit(current, source.repo_id, source.revision):
        return current, False  # a commit never changes: no need to ask the hub
    revision = hub.resolve(source)
    if current is not None and _is_hub_commit(current, source.repo_id, revision.commit):
        return current, False
    missing = [name for name in TEXT_FILES if name not in revision.files]
    if missing:
        raise DataSourceError(
            f"{source.repo_id}@{source.revision} lacks {', '.join(missing)}; {hub.ALTERNATIVES}"
        )
    images_zip = next((name for name in IMAGE_ZIPS if name in revision.files), None)
    names = [*TEXT_FILES, *([images_zip] if images_zip else [])]
    paths = {name: hub.download(revision, name) for name in names}
    fetched = {name: _hash_file(path) for name, path in paths.items()}
    for name, blob in fetched.items():
        expected = revision.files[name].sha256
        if expected is not None and expected != blob.sha256:
            raise DataSourceError(
                f"{name} from the hub cache does not match the hub's sha256 ({paths[name]}); "
                "delete that file from the cache and run again"
            )
    provenance = {
        "kind": "hub",
        "endpoint": hub.endpoint(),
        "repo_id": source.repo_id,
        "repo_type": hub.REPO_TYPE,
        "revision": source.revision,
        "commit": revision.commit,
        "files": {name: blob._asdict() for name, blob in fetched.items()},
    }
    inputs = _Inputs(
        text={name: paths[name] for name in TEXT_FILES},
        images_zip=paths[images_zip] if images_zip else None,
        image_dirs={},
    )
    fill = added.fill(lambda tmp: _materialise(inputs, tmp))
    return _build(out, added.provenance(provenance), fill), True


def _ingest_local(
    source: LocalSource, out: Path, current: Manifest | None, added: _Added
) -> tuple[Manifest, bool]:
    """Copy a local directory in the hub's layout; skipped when its content hashes are unchanged."""
    inputs = _find_inputs(source.path)
    files = {name: _hash_file(path)._asdict() for name, path in inputs.text.items()}
    if inputs.images_zip is not None:
        files[inputs.images_zip.name] = _hash_file(inputs.images_zip)._asdict()
    photos = _summarise(_hash_photos(inputs.image_dirs))
    for image_set, folder in inputs.image_dirs.items():
        files[folder.relative_to(source.path).as_posix()] = photos[image_set]
    provenance = added.provenance(
        {"kind": "local", "path": str(source.path.resolve()), "files": files}
    )
    if current is not None and current["source"] == provenance:
        return current, False
    return _build(out, provenance, added.fill(lambda tmp: _materialise(inputs, tmp))), True


def _ingest_synthetic(
    params: Params, out: Path, current: Manifest | None, added: _Added
) -> tuple[Manifest, bool]:
    """Generate data with the params' `synthetic` block; skipped when the block is unchanged."""
    from src.data.synth import synthesize

    settings = params.synthetic
    provenance = added.provenance({"kind": "synthetic", "params": settings.model_dump()})
    if current is not None and current["source"] == provenance:
        return current, False

    def generate(tmp: Path) -> _Content:
        generated = tmp / "synthetic"
        synthesize(
            generated,
            rows=settings.rows,
            test_rows=settings.test_rows,
            images=settings.images,
            image_size=settings.image_size,
            seed=settings.seed,
            copies=settings.copies,
        )
        for entry in generated.iterdir():
            entry.rename(tmp / entry.name)
        generated.rmdir()
        for image_set in IMAGE_SETS:
            (tmp / IMAGES_DIR / image_set).mkdir(parents=True, exist_ok=True)
        photos = _hash_photos({s: tmp / IMAGES_DIR / s for s in IMAGE_SETS})
        return {name: _hash_file(tmp / name)._asdict() for name in TEXT_FILES}, photos

    return _build(out, provenance, added.fill(generate)), True


def _find_inputs(root: Path) -> _Inputs:
    """Find the CSVs and the photos (a zip, else `images/image_*` or `image_*` folders)."""
    missing = [name for name in TEXT_FILES if not (root / name).is_file()]
    if missing:
        raise DataSourceError(f"{root} lacks {', '.join(missing)} (expected the hub's layout)")
    text = {name: root / name for name in TEXT_FILES}
    images_zip = next((root / name for name in IMAGE_ZIPS if (root / name).is_file()), None)
    if images_zip is not None:
        return _Inputs(text, images_zip, {})
    found = {
        image_set: next(
            (d for d in (root / IMAGES_DIR / image_set, root / image_set) if d.is_dir()), None
        )
        for image_set in IMAGE_SETS
    }
    dirs = {image_set: folder for image_set, folder in found.items() if folder is not None}
    return _Inputs(text, None, dirs)


def _materialise(inputs: _Inputs, tmp: Path) -> _Content:
    """Copy the CSVs and unpack or copy the photos into `tmp`."""
    files = {name: _copy_file(path, tmp / name)._asdict() for name, path in inputs.text.items()}
    for image_set in IMAGE_SETS:
        (tmp / IMAGES_DIR / image_set).mkdir(parents=True)
    if inputs.images_zip is not None:
        photos = _unpack_zip(inputs.images_zip, tmp / IMAGES_DIR)
    else:
        photos = _copy_photos(_list_photos(inputs.image_dirs), tmp / IMAGES_DIR)
    if not photos:
        logger.warning("the source holds no product photos; the snapshot has text only")
    return files, photos


def _unpack_zip(path: Path, images: Path) -> list[_Photo]:
    """Unpack the photos of an images zip (either layout) under `images/<set>/`."""
    members = _zip_photos(path)

    def unpack(part: Sequence[tuple[str, str, str]], tick: Callable[[], None]) -> list[_Photo]:
        done = []
        with zipfile.ZipFile(path) as archive:
            for member, image_set, name in part:
                with archive.open(member) as source:
                    blob = _copy_stream(source, images / image_set / name)
                done.append(_Photo(image_set, name, blob))
                tick()
        return done

    try:
        return _in_threads(members, unpack, f"unpacking {path.name}")
    except (zipfile.BadZipFile, EOFError) as error:
        raise DataSourceError(f"{path} is corrupt ({error})") from error


def _zip_photos(path: Path) -> list[tuple[str, str, str]]:
    """The photos in an images zip as (member, set, file name); other entries are skipped."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile as error:
        raise DataSourceError(f"{path} is not a readable zip ({error})") from error
    found: dict[tuple[str, str], str] = {}
    for info in infos:
        match = _ZIP_PHOTO.match(info.filename)
        if info.is_dir() or match is None or match[2].startswith("."):
            continue
        key = (match[1], match[2])
        if key in found:
            raise DataSourceError(
                f"{path} holds {key[0]}/{key[1]} twice ({found[key]}, {info.filename})"
            )
        found[key] = info.filename
    return [(member, image_set, name) for (image_set, name), member in found.items()]


def _copy_photos(listed: Sequence[tuple[str, Path]], images: Path) -> list[_Photo]:
    """Copy listed photos (as `_list_photos` lists them) under `images/<set>/`, hashing the
    bytes as they pass."""

    def copy(part: Sequence[tuple[str, Path]], tick: Callable[[], None]) -> list[_Photo]:
        done = []
        for image_set, source in part:
            done.append(
                _Photo(image_set, source.name, _copy_file(source, images / image_set / source.name))
            )
            tick()
        return done

    return _in_threads(listed, copy, "copying photos")


def _hash_photos(dirs: dict[str, Path]) -> list[_Photo]:
    """Hash photo folders in place."""

    def digest(part: Sequence[tuple[str, Path]], tick: Callable[[], None]) -> list[_Photo]:
        done = []
        for image_set, path in part:
            with path.open("rb") as source:
                done.append(_Photo(image_set, path.name, _hash_stream(source)))
            tick()
        return done

    return _in_threads(_list_photos(dirs), digest, "hashing photos")


def _list_photos(dirs: dict[str, Path]) -> list[tuple[str, Path]]:
    """The files of photo folders, as (set, path); hidden files are skipped."""
    return [
        (image_set, Path(entry.path))
        for image_set, folder in dirs.items()
        for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith(".")
    ]


def _summarise(photos: list[_Photo]) -> dict[str, dict[str, Any]]:
    """Count, bytes and digest (sha256 of the sorted `name sha256` lines) of each photo set."""
    summary = {}
    for image_set in IMAGE_SETS:
        chosen = sorted((p.name, p.blob) for p in photos if p.image_set == image_set)
        listing = "".join(f"{name} {blob.sha256}\n" for name, blob in chosen)
        summary[image_set] = {
            "count": len(chosen),
            "bytes": sum(blob.size for _, blob in chosen),
            "sha256": hashlib.sha256(listing.encode()).hexdigest(),
        }
    return summary


def _in_threads(
    items: Sequence[_T],
    work: Callable[[Sequence[_T], Callable[[], None]], list[_R]],
    desc: str,
) -> list[_R]:
    """Run `work` on slices of `items` in threads, with one progress bar; a failure stops all."""
    if not items:
        return []
    workers = min(_workers(), len(items))
    step = -(-len(items) // workers)
    parts = [items[start : start + step] for start in range(0, len(items), step)]
    lock = threading.Lock()
    failed = threading.Event()
    with tqdm(total=len(items), desc=desc, unit="file", disable=None) as bar:

        def tick() -> None:
            if failed.is_set():
                raise _StoppedError
            with lock:
                bar.update()

        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(work, part, tick) for part in parts]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            finally:
                failed.set()
    for future in futures:
        error = future.exception()
        if error is not None and not isinstance(error, _StoppedError):
            raise error
    return [result for future in futures for result in future.result()]


def _workers() -> int:
    """Threads for copying and hashing: I/O and hashlib release the GIL."""
    # More would not help (the disk is the limit) and each zip reader holds the zip's index
    # (~80 MB for the full images zip).
    return min(4, os.cpu_count() or 1)


def _hash_file(path: Path) -> _Blob:
    """sha256 and size of one file, with a progress bar when it is large."""
    size = path.stat().st_size
    with (
        path.open("rb") as source,
        tqdm(
            total=size,
            desc=f"hashing {path.name}",
            unit="B",
            unit_scale=True,
            disable=None if size >= _BAR_MIN_BYTES else True,
            leave=False,
        ) as bar,
    ):
        digest = hashlib.sha256()
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return _Blob(digest.hexdigest(), size)


def _hash_stream(source: IO[bytes]) -> _Blob:
    """sha256 and size of a stream read to its end."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return _Blob(digest.hexdigest(), size)


def _copy_file(source: Path, dest: Path) -> _Blob:
    """Copy one file, hashing it on the way."""
    with source.open("rb") as stream:
        return _copy_stream(stream, dest)


def _copy_stream(source: IO[bytes], dest: Path) -> _Blob:
    """Write a stream to a new file, hashing it on the way."""
    digest = hashlib.sha256()
    size = 0
    with dest.open("xb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return _Blob(digest.hexdigest(), size)


def _build(out: Path, provenance: Manifest, fill: Callable[[Path], _Content]) -> Manifest:
    """Fill a sibling folder, write its manifest last, then swap it in for `out`."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        files, photos = fill(tmp)
        content: Manifest = {"files": files, "images": _summarise(photos)}
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": _version(content),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": provenance,
            **content,
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "raw snapshot %s written to %s (%s)",
        manifest["version"],
        out,
        ", ".join(f"{s}: {manifest['images'][s]['count']} photos" for s in IMAGE_SETS),
    )
    return manifest


def _version(content: Manifest) -> str:
    """The version id: sha256 of the snapshot's content description in canonical JSON."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _publish(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished `tmp` with two renames; the old one is removed after."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(tmp.name.replace(".tmp-", ".old-", 1))
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old)


def _recover(out: Path) -> None:
    """Clean up after killed runs: drop unfinished builds, put back a snapshot left aside."""
    for stale in out.parent.glob(f"{glob.escape(out.name)}.tmp-*"):
        logger.warning("removing %s, left by an interrupted ingest", stale)
        shutil.rmtree(stale)
    for old in sorted(out.parent.glob(f"{glob.escape(out.name)}.old-*")):
        if out.exists():
            shutil.rmtree(old)
        else:
            logger.warning("restoring %s, left aside by an interrupted ingest", out)
            old.rename(out)


def _check_replaceable(out: Path) -> None:
    """Refuse to replace anything but a raw snapshot or an empty folder."""
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_FILE).is_file())
    ):
        raise RakutenError(
            f"{out} exists and is not a raw snapshot (no {MANIFEST_FILE}); "
            "move it away or pick --out"
        )


def _current_manifest(out: Path) -> Manifest | None:
    """The snapshot's manifest if it is readable, of this format and matches the files on disk."""
    try:
        manifest = read_manifest(out)
        if manifest.get("format") != MANIFEST_FORMAT:
            return None
        for name, blob in manifest["files"].items():
            if (out / name).stat().st_size != blob["size"]:
                return None
        for image_set, summary in manifest["images"].items():
            if len(_list_photos({image_set: out / IMAGES_DIR / image_set})) != summary["count"]:
                return None
    except (DataSourceError, ValueError, KeyError, TypeError, OSError):
        return None
    return manifest


def _is_hub_commit(manifest: Manifest, repo_id: str, commit: str) -> bool:
    """Whether a manifest's snapshot was made from this hub repo at this commit."""
    source = manifest["source"]
    return bool(
        source.get("kind") == "hub"
        and source.get("repo_id") == repo_id
        and source.get("commit") == commit
    )


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out` for this process (a second ingest fails at once)."""
    with (out.parent / f".{out.name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RakutenError(f"another ingest is writing {out}; wait for it to end") from None
        yield
