"""The model the API serves: the version an alias points to, swapped in when the alias moves.

A promotion or a rollback moves `@champion` in the registry; the API notices on its next refresh
and loads the new version beside the old one, which keeps answering until the swap. A registry
that cannot be reached, or an alias that is gone, leaves the served model as it is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.pyfunc import PyFuncModel

from src.db.store import ModelRef
from src.models.packaged import load
from src.registry.lifecycle import NoModelError, model_ref
from src.registry.tracking import tracking_client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version and when it was loaded."""

    ref: ModelRef
    model: PyFuncModel
    loaded_at: datetime


class ModelSlot:
    """Holds the served model of one alias; `refresh` loads the alias's version when it moved."""

    def __init__(
        self, tracking_uri: str, alias: str, on_swap: Callable[[ModelRef], None] | None = None
    ) -> None:
        self.alias = alias
        self._on_swap = on_swap
        self._tracking_uri = tracking_uri
        self._client = tracking_client(tracking_uri)
        self._current: ServedModel | None = None
        self._lock = threading.Lock()  # one load at a time
        self.problem: str | None = "not loaded yet"

    @property
    def current(self) -> ServedModel | None:
        """The model answering requests now, if any."""
        return self._current

    def refresh(self) -> bool:
        """Load the version the alias points to if it is not the one served; True on a swap.

        Failures are kept in `problem` (and logged), never raised: the caller is the API's
        start-up or its periodic check, and the model served so far stays in place.
        """
        with self._lock:
            try:
                ref = model_ref(self._client, self.alias)
            except NoModelError as error:
                self.problem = None if self._current else f"{error}: nothing to serve yet"
                kept = "; still serving the version loaded before" if self._current else ""
                logger.warning("%s%s", error, kept)
                return False
            except Exception:  # the registry's client raises many types when down
                self.problem = "the model registry is unreachable (details in the API's log)"
                logger.exception("could not read @%s from the model registry", self.alias)
                return False
            if self._current is not None and self._current.ref.version == ref.version:
                self.problem = None
                return False
            uri = f"models:/{ref.name}/{ref.version}"
            try:
                model = load(uri, self._tracking_uri)
            except Exception:  # a broken or unreachable artifact: keep what we have
                self.problem = f"could not load {uri} (details in the API's log)"
                logger.exception("could not load %s", uri)
                return False
            previous = self._current
            self._current = ServedModel(ref=ref, model=model, loaded_at=datetime.now(UTC))
            self.problem = None
            if self._on_swap is not None:
                self._on_swap(ref)
            logger.info(
                "serving %s v%s (@%s)%s",
                ref.name,
                ref.version,
                self.alias,
                f", was v{previous.ref.version}" if previous else "",
            )
            return True
