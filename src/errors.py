"""Project errors: expected failures that the CLI reports in one line, without a traceback."""

from __future__ import annotations

from typing import Final

# A step that finds nothing to do exits with it; Airflow shows the task skipped
# (skip_on_exit_code), monitoring records a skip rather than a failure.
SKIPPED_EXIT_CODE: Final = 99


class RakutenError(Exception):
    """An expected failure whose message tells the user what went wrong and what to do."""


class DataSourceError(RakutenError):
    """The data source cannot be read: hub unreachable, repo or revision missing, files absent."""


class MissingWeightsError(RakutenError):
    """Pretrained weights for a model backbone are neither in a configured file nor cached."""
