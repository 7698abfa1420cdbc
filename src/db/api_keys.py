"""API keys: made once, shown once, kept only as an HMAC-SHA256 under the server's secret.

A key is `secrets.token_urlsafe(32)`; its first characters (the prefix) are stored in clear to
find its row, the rest is only ever compared as an HMAC, in constant time. A stolen copy of the
table gives no key, and without the server's secret (RAKUTEN_API_KEY_SECRET) not even a way to
test guesses offline.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Engine, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from src.config import Settings
from src.db.engine import require_current, transaction
from src.db.models import ApiKey
from src.errors import RakutenError

logger = logging.getLogger(__name__)

PREDICT: Final = "predict"
ADMIN: Final = "admin"
SCOPES: Final = (PREDICT, ADMIN)
PREFIX_CHARS: Final = 8
MIN_SECRET_CHARS: Final = 32


@dataclass(frozen=True)
class KeyRecord:
    """A key as the store knows it (never the key itself)."""

    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class CreatedKey:
    """A key just made: the record, and the key itself (shown this once, stored nowhere)."""

    record: KeyRecord
    key: str


def server_secret(settings: Settings) -> bytes:
    """The HMAC secret from RAKUTEN_API_KEY_SECRET; a clear error when it is unset or short."""
    configured = settings.api_key_secret
    if configured is None or len(configured.get_secret_value()) < MIN_SECRET_CHARS:
        raise RakutenError(
            f"RAKUTEN_API_KEY_SECRET must be set to at least {MIN_SECRET_CHARS} characters "
            '(python -c "import secrets; print(secrets.token_urlsafe(48))")'
        )
    return configured.get_secret_value().encode()


def key_digest(key: str, secret: bytes) -> str:
    """The HMAC-SHA256 of a key under the server's secret, in hex."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def _record(row: Row[Any]) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(row.scopes.split()),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _checked_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(scopes))
    unknown = [scope for scope in chosen if scope not in SCOPES]
    if not chosen or unknown:
        raise RakutenError(
            f"scope {', '.join(unknown) or '(none)'} unknown: give {' or '.join(SCOPES)}"
        )
    return chosen


def create_key(engine: Engine, name: str, scopes: Iterable[str], secret: bytes) -> CreatedKey:
    """Make a key with `scopes`, store its HMAC and prefix, and return it (to show once)."""
    if not name.strip():
        raise RakutenError("an API key needs a name (who or what uses it)")
    chosen = _checked_scopes(scopes)
    for _ in range(5):  # a prefix already taken (48 random bits) is near impossible, not impossible
        key = secrets.token_urlsafe(32)
        try:
            with transaction(engine) as connection:
                require_current(connection)
                row = connection.execute(
                    insert(ApiKey)
                    .values(
                        name=name.strip(),
                        prefix=key[:PREFIX_CHARS],
                        digest=key_digest(key, secret),
                        scopes=" ".join(chosen),
                        created_at=datetime.now(UTC),
                    )
                    .returning(ApiKey)
                ).one()
        except IntegrityError:
            continue
        logger.info("API key %d (%s) created with scopes %s", row.id, row.name, row.scopes)
        return CreatedKey(record=_record(row), key=key)
    raise RakutenError("could not find a free key prefix; try again")


def list_keys(engine: Engine) -> list[KeyRecord]:
    """Every key, revoked ones included, oldest first."""
    with transaction(engine) as connection:
        require_current(connection)
        rows = connection.execute(select(ApiKey).order_by(ApiKey.id)).all()
    return [_record(row) for row in rows]


def revoke_key(engine: Engine, key_id: int) -> KeyRecord:
    """Revoke a key for good (revoking it again keeps the first revocation's time)."""
    with transaction(engine) as connection:
        require_current(connection)
        connection.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        row = connection.execute(select(ApiKey).where(ApiKey.id == key_id)).one_or_none()
    if row is None:
        raise RakutenError(f"no API key {key_id} (`rakuten api-key list` shows them)")
    logger.info("API key %d (%s) revoked", key_id, row.name)
    return _record(row)


def find_key(engine: Engine, key: str, secret: bytes) -> KeyRecord | None:
    """The record of a presented key, None if no key matches; revoked keys are returned too."""
    digest = key_digest(key, secret)
    with transaction(engine) as connection:
        row = connection.execute(
            select(ApiKey).where(ApiKey.prefix == key[:PREFIX_CHARS])
        ).one_or_none()
    if row is None or not hmac.compare_digest(row.digest, digest):
        return None
    return _record(row)


def key_by_id(engine: Engine, key_id: int) -> KeyRecord | None:
    """The record of a key by its id (what a page's session holds), None if there is none."""
    with transaction(engine) as connection:
        row = connection.execute(select(ApiKey).where(ApiKey.id == key_id)).one_or_none()
    return None if row is None else _record(row)


def mark_used(engine: Engine, key_id: int, at: datetime) -> None:
    """Write when the key was last seen (the API does it once per cache period, not per call)."""
    with transaction(engine) as connection:
        connection.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
