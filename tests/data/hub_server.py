"""A local HTTP server that speaks the HuggingFace hub's API for dataset repos, for tests.

It answers what huggingface_hub's `HfApi.dataset_info` and `hf_hub_download` ask, as the hub does:
- `GET /api/datasets/{repo}/revision/{rev}`: the commit sha and the files (size, git blob id and,
  for LFS files, sha256), or 404 with `X-Error-Code: RepoNotFound | RevisionNotFound`;
- `HEAD|GET /datasets/{repo}/resolve/{rev}/{path}`: a regular file is served with `X-Repo-Commit`
  and `ETag` (its git blob id); an LFS file (`*.zip`, as the hub's default `.gitattributes`) is a
  302 to a CDN on another host (`localhost` instead of `127.0.0.1`) with `X-Linked-Etag` (its
  sha256) and `X-Linked-Size`; a missing file is 404 with `X-Error-Code: EntryNotFound`;
- `HEAD|GET /cdn/{sha256}`: the LFS file's bytes.
Files are served from where they lie (nothing is copied) and every request is logged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".zip",)


@dataclass(frozen=True)
class RepoFile:
    """A file of a served commit, with the checksums the hub reports."""

    local: Path
    size: int
    sha256: str
    git_blob: str
    lfs: bool

    @classmethod
    def of(cls, local: Path, path_in_repo: str) -> RepoFile:
        """Describe a local file served as `path_in_repo`."""
        sha256, git = hashlib.sha256(), hashlib.sha1(usedforsecurity=False)
        size = local.stat().st_size
        git.update(f"blob {size}\0".encode())
        with local.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                sha256.update(chunk)
                git.update(chunk)
        return cls(
            local, size, sha256.hexdigest(), git.hexdigest(), path_in_repo.endswith(LFS_SUFFIXES)
        )

    @property
    def pointer_blob(self) -> str:
        """Git blob id of the LFS pointer that stands for the file in the repo."""
        spec = "https://git-lfs.github.com/spec/v1"
        pointer = f"version {spec}\noid sha256:{self.sha256}\nsize {self.size}\n"
        blob = f"blob {len(pointer)}\0{pointer}".encode()
        return hashlib.sha1(blob, usedforsecurity=False).hexdigest()


class HubServer:
    """Dataset repos served over HTTP on 127.0.0.1; use as a context manager."""

    def __init__(self) -> None:
        self._refs: dict[str, dict[str, str]] = {}
        self._commits: dict[str, dict[str, RepoFile]] = {}
        self._by_sha256: dict[str, RepoFile] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        """The endpoint to give huggingface_hub (HF_ENDPOINT)."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add_commit(
        self, repo_id: str, files: dict[str, Path], refs: tuple[str, ...] = ("main",)
    ) -> str:
        """Serve `files` (path in repo -> local file) as a new commit that `refs` point to."""
        described = {path: RepoFile.of(local, path) for path, local in files.items()}
        listing = "".join(f"{p} {f.git_blob}\n" for p, f in sorted(described.items()))
        commit = hashlib.sha1(f"{repo_id}\n{listing}".encode(), usedforsecurity=False).hexdigest()
        with self._lock:
            self._commits[commit] = described
            self._by_sha256.update({f.sha256: f for f in described.values() if f.lfs})
            self._refs.setdefault(repo_id, {}).update(dict.fromkeys(refs, commit))
            self._refs[repo_id][commit] = commit
        return commit

    def downloads(self) -> list[str]:
        """Paths of the requests that transferred a file's bytes (GET on resolve or CDN)."""
        with self._lock:
            return [
                p
                for m, p in self.requests
                if m == "GET" and ("/resolve/" in p or p.startswith("/cdn/"))
            ]

    def __enter__(self) -> HubServer:
        """Start serving; the socket listens since construction, so requests never miss it."""
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def log(self, method: str, path: str) -> None:
        """Record one request."""
        with self._lock:
            self.requests.append((method, path))

    def commit_of(self, repo_id: str, revision: str) -> str | None:
        """The commit a revision of a repo points to, if any."""
        with self._lock:
            return self._refs[repo_id].get(revision)

    def has_repo(self, repo_id: str) -> bool:
        """Whether the repo is served."""
        with self._lock:
            return repo_id in self._refs

    def files(self, commit: str) -> dict[str, RepoFile]:
        """The files of a commit."""
        with self._lock:
            return self._commits[commit]

    def lfs_file(self, sha256: str) -> RepoFile | None:
        """An LFS file by its sha256."""
        with self._lock:
            return self._by_sha256.get(sha256)


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined, no-any-return]

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet: requests are in `HubServer.requests`."""

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _route(self, body: bool) -> None:
        path = urlsplit(self.path).path
        self.hub.log(self.command, path)
        parts = [unquote(part) for part in path.split("/")[1:]]
        match parts:
            case ["api", "datasets", owner, name, "revision", revision] if body:
                self._info(f"{owner}/{name}", revision)
            case ["datasets", owner, name, "resolve", revision, *in_repo] if in_repo:
                self._resolve(f"{owner}/{name}", revision, "/".join(in_repo), body)
            case ["cdn", sha256] if (repo_file := self.hub.lfs_file(sha256)) is not None:
                self._send_file(repo_file, {}, body)
            case _:
                self._send(404, {}, b"")

    def _commit(self, repo_id: str, revision: str) -> str | None:
        """The commit of a revision, or None after answering 404 as the hub does."""
        if not self.hub.has_repo(repo_id):
            self._send(404, {"X-Error-Code": "RepoNotFound"}, b'{"error":"Repository not found"}')
            return None
        commit = self.hub.commit_of(repo_id, revision)
        if commit is None:
            self._send(404, {"X-Error-Code": "RevisionNotFound"}, b'{"error":"Invalid rev id"}')
        return commit

    def _info(self, repo_id: str, revision: str) -> None:
        commit = self._commit(repo_id, revision)
        if commit is None:
            return
        siblings = []
        for path, repo_file in sorted(self.hub.files(commit).items()):
            sibling: dict[str, object] = {
                "rfilename": path,
                "size": repo_file.size,
                "blobId": repo_file.git_blob,
            }
            if repo_file.lfs:
                sibling["lfs"] = {
                    "sha256": repo_file.sha256,
                    "size": repo_file.size,
                    "pointerSize": 134,
                }
            siblings.append(sibling)
        info = {
            "_id": commit[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit,
            "lastModified": "2024-01-01T00:00:00.000Z",
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode())

    def _resolve(self, repo_id: str, revision: str, in_repo: str, body: bool) -> None:
        commit = self._commit(repo_id, revision)
        if commit is None:
            return
        repo_file = self.hub.files(commit).get(in_repo)
        if repo_file is None:
            self._send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b"")
            return
        if not repo_file.lfs:
            self._send_file(
                repo_file, {"X-Repo-Commit": commit, "ETag": f'"{repo_file.git_blob}"'}, body
            )
            return
        cdn = f"http://localhost:{self.server.server_address[1]}/cdn/{repo_file.sha256}"
        headers = {
            "Location": cdn,
            "X-Repo-Commit": commit,
            "ETag": f'"{repo_file.pointer_blob}"',
            "X-Linked-Etag": f'"{repo_file.sha256}"',
            "X-Linked-Size": str(repo_file.size),
        }
        self._send(302, headers, b"")

    def _send_file(self, repo_file: RepoFile, headers: dict[str, str], body: bool) -> None:
        self.send_response(200)
        for key, value in {**headers, "Content-Length": str(repo_file.size)}.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            with repo_file.local.open("rb") as stream:
                shutil.copyfileobj(stream, self.wfile)

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
