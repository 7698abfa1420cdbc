"""Who calls: API keys (header `X-API-Key` or `Authorization: Bearer`) and their scopes.

Scope `predict` classifies and looks up predictions; scope `admin` also runs the model's
lifecycle. A missing, unknown or revoked key is a 401, a key without the scope a 403. A key once
checked is trusted for RAKUTEN_API_KEY_CACHE_SECONDS, so checking it costs no database round
trip per request (and a revocation takes effect within that time); its last use is written once
per such period. With RAKUTEN_API_AUTH=off every call is let in, as an anonymous admin.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from src.db.api_keys import ADMIN, PREDICT, KeyRecord, find_key, key_by_id, key_digest, mark_used
from src.db.engine import DatabaseError

logger = logging.getLogger(__name__)

API_KEY_HEADER: Final = "X-API-Key"


@dataclass(frozen=True)
class Caller:
    """The key behind a request: its id (None when auth is off), its name and scopes."""

    key_id: int | None
    name: str
    scopes: tuple[str, ...]

    def allows(self, scope: str) -> bool:
        """Whether the caller may call what needs `scope` (admin may call everything)."""
        return scope in self.scopes or ADMIN in self.scopes


ANONYMOUS: Final = Caller(key_id=None, name="anonymous (RAKUTEN_API_AUTH=off)", scopes=(ADMIN,))


def _caller(record: KeyRecord) -> Caller:
    return Caller(key_id=record.id, name=record.name, scopes=record.scopes)


class KeyChecker:
    """Checks presented keys against the store, remembering good ones for `ttl` seconds."""

    def __init__(self, engine: Engine, secret: bytes | None, ttl: float) -> None:
        self.enabled = secret is not None
        self._engine = engine
        self._secret = secret or b""
        self._ttl = ttl
        self._by_digest: dict[str, tuple[Caller, float]] = {}
        self._by_id: dict[int, tuple[Caller, float]] = {}
        self._lock = threading.Lock()

    def _fresh(self, record: KeyRecord | None) -> Caller | None:
        """The caller of a valid record (its last use written), None for none or revoked."""
        if record is None or record.revoked_at is not None:
            return None
        mark_used(self._engine, record.id, datetime.now(UTC))
        return _caller(record)

    def cached(self, key: str) -> Caller | None:
        """The caller of a key checked less than `ttl` seconds ago; None: `check` must say."""
        cached = self._by_digest.get(key_digest(key, self._secret))
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    def check(self, key: str) -> Caller | None:
        """The caller a key belongs to, or None when it is unknown or revoked."""
        digest = key_digest(key, self._secret)
        now = time.monotonic()
        with self._lock:
            cached = self._by_digest.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        caller = self._fresh(find_key(self._engine, key, self._secret))
        with self._lock:
            if caller is None:
                self._by_digest.pop(digest, None)
            else:
                self._by_digest[digest] = (caller, now + self._ttl)
        return caller

    def by_id(self, key_id: int) -> Caller | None:
        """The caller of a signed-in page session (its key id), None once revoked."""
        now = time.monotonic()
        with self._lock:
            cached = self._by_id.get(key_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        caller = self._fresh(key_by_id(self._engine, key_id))
        with self._lock:
            if caller is None:
                self._by_id.pop(key_id, None)
            else:
                self._by_id[key_id] = (caller, now + self._ttl)
        return caller


def checker(request: Request) -> KeyChecker:
    """The app's key checker."""
    keys: KeyChecker = request.app.state.keys
    return keys


_api_key = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="An API key (`rakuten api-key create`)"
)
_bearer = HTTPBearer(auto_error=False, description="The same API key, as a bearer token")
_UNAUTHORISED: Final = {"WWW-Authenticate": "Bearer"}


def check_key(keys: KeyChecker, key: str) -> Caller:
    """The caller of a key, or 401 (a store that cannot be read: 503)."""
    try:
        caller = keys.check(key)
    except (SQLAlchemyError, DatabaseError):
        logger.exception("API keys could not be read from the store")
        raise HTTPException(
            503, "API keys cannot be checked now (details in the API's log)"
        ) from None
    if caller is None:
        raise HTTPException(401, "unknown or revoked API key", headers=_UNAUTHORISED)
    return caller


# The dependencies below are coroutines: FastAPI runs a plain function dependency in a worker
# thread, a hand-off per request that cost more than the check itself (a key checked recently
# is a dictionary lookup; only a key the cache does not hold goes to the store, in a thread).
async def caller(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    """Who calls: the key in `X-API-Key` or `Authorization: Bearer`; 401 without a good one."""
    keys = checker(request)
    if not keys.enabled:
        return ANONYMOUS
    key = api_key or (bearer.credentials if bearer is not None else None)
    if not key:
        raise HTTPException(
            401,
            f"send an API key in {API_KEY_HEADER} or Authorization: Bearer",
            headers=_UNAUTHORISED,
        )
    known = keys.cached(key)
    return known if known is not None else await run_in_threadpool(check_key, keys, key)


def requires(scope: str) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency that lets in only callers whose key has `scope` (403 otherwise)."""

    async def allowed(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.allows(scope):
            raise HTTPException(403, f"this API key lacks the scope {scope!r}")
        return who

    return allowed


Predictor = Annotated[Caller, Depends(requires(PREDICT))]
Admin = Annotated[Caller, Depends(requires(ADMIN))]
AUTH_ERRORS: Final[dict[int | str, dict[str, str]]] = {
    401: {"description": "No API key, or an unknown or revoked one"},
    403: {"description": "The API key lacks the scope"},
}
