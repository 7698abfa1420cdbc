"""The HuggingFace hub at the edge: resolve a dataset revision and download its files.

Every call goes through huggingface_hub; its network and HTTP errors become one `DataSourceError`
that names the cause and the ways to go on without the hub.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from src.config import HubSource
from src.errors import DataSourceError

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
ALTERNATIVES = (
    "use a local copy laid out like the hub repo (--source /path/to/dir or "
    "RAKUTEN_DATA_SOURCE=/path/to/dir) or generated data (--source synthetic or "
    "RAKUTEN_DATA_SOURCE=synthetic)"
)


@dataclass(frozen=True)
class HubFile:
    """One file of a dataset repo at a commit; `sha256` is the hub's checksum (LFS files only)."""

    path: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class HubRevision:
    """A dataset repo's branch, tag or commit, resolved to a commit, with the files it holds."""

    repo_id: str
    revision: str
    commit: str
    files: dict[str, HubFile]


def endpoint() -> str:
    """The hub's address: HF_ENDPOINT as it is now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def resolve(source: HubSource) -> HubRevision:
    """Resolve the source's revision to a commit and list its files, in one short request."""
    with _reported(source.repo_id, source.revision):
        info = HfApi(endpoint=endpoint()).dataset_info(
            source.repo_id,
            revision=source.revision,
            files_metadata=True,
            timeout=constants.HF_HUB_ETAG_TIMEOUT,
        )
    files = {
        sibling.rfilename: HubFile(
            sibling.rfilename, sibling.size, sibling.lfs.sha256 if sibling.lfs else None
        )
        for sibling in info.siblings or []
    }
    logger.info("hub %s@%s is commit %s", source.repo_id, source.revision, info.sha)
    return HubRevision(source.repo_id, source.revision, str(info.sha), files)


def download(revision: HubRevision, path: str) -> Path:
    """Download one file of the resolved commit to the hub cache (nothing if cached); its path."""
    with _reported(revision.repo_id, revision.revision):
        local = hf_hub_download(
            revision.repo_id,
            path,
            repo_type=REPO_TYPE,
            revision=revision.commit,
            endpoint=endpoint(),
            cache_dir=os.environ.get("HF_HUB_CACHE"),
            etag_timeout=constants.HF_HUB_ETAG_TIMEOUT,
        )
    return Path(local)


@contextmanager
def _reported(repo_id: str, revision: str) -> Iterator[None]:
    """Turn huggingface_hub's network and HTTP errors into one-line `DataSourceError`s."""
    where = endpoint()
    try:
        yield
    except (httpx2.TransportError, OfflineModeIsEnabled, LocalEntryNotFoundError) as error:
        raise DataSourceError(
            f"cannot reach the HuggingFace hub at {where} ({_root_cause(error)}); {ALTERNATIVES}"
        ) from error
    except RepositoryNotFoundError as error:
        raise DataSourceError(
            f"dataset repo {repo_id} not found (or private) on {where}; {ALTERNATIVES}"
        ) from error
    except RevisionNotFoundError as error:
        raise DataSourceError(
            f"revision {revision!r} not found in dataset repo {repo_id} on {where}"
        ) from error
    except HfHubHTTPError as error:
        raise DataSourceError(
            f"the HuggingFace hub at {where} failed ({_root_cause(error)}); {ALTERNATIVES}"
        ) from error


def _root_cause(error: BaseException) -> str:
    """The innermost cause of an error, on one short line."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"
