"""The data contract of the raw CSVs (pandera): what breaks the run and what goes to quarantine.

Three layers, each a pandera schema:
- structure (`X_STRUCTURE`, `Y_STRUCTURE`): the columns, exactly, and a unique integer index. A
  break here means the file is not what the pipeline was written for, so the run stops with a
  `DataContractError` naming what is wrong; so does a Y whose index is not X's.
- rows (`X_ROWS`, `LABEL_ROWS`): a designation that is there and not blank, ids that are positive
  integers, a prdtypecode among the 27 codes. A row that breaks one is set aside in the quarantine
  with the reason, and counted.
- types (`X_TYPED`, `LABELLED_TYPED`): the kept rows with their real dtypes, productid and imageid
  unique. A row that repeats the productid or imageid of an earlier kept row is quarantined; an
  exact copy of an earlier row (every field equal) is dropped as a duplicate beforehand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from src.data.classes import PRDTYPECODES
from src.errors import RakutenError

X_COLUMNS: Final = ("designation", "description", "productid", "imageid")
Y_COLUMNS: Final = ("prdtypecode",)
QUARANTINE_COLUMNS: Final = ("source", "row_index", *X_COLUMNS, *Y_COLUMNS, "reason")

# Ids are written in decimal without sign or leading zero, and fit an int64.
_POSITIVE_INTEGER: Final = r"^[1-9][0-9]{0,17}$"


class DataContractError(RakutenError):
    """A raw file breaks the contract's structure: the run cannot go on."""


def _structure(columns: tuple[str, ...]) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {name: pa.Column(nullable=True) for name in columns},
        index=pa.Index("int64", coerce=True, unique=True),
        strict=True,
    )


def _identifier() -> pa.Column:
    return pa.Column(
        checks=pa.Check(lambda ids: ids.str.fullmatch(_POSITIVE_INTEGER), name="positive_integer")
    )


X_STRUCTURE: Final = _structure(X_COLUMNS)
Y_STRUCTURE: Final = _structure(Y_COLUMNS)

X_ROWS: Final = pa.DataFrameSchema(
    {
        "designation": pa.Column(
            checks=pa.Check(lambda text: text.str.strip().str.len() > 0, name="not_blank")
        ),
        "description": pa.Column(nullable=True),
        "productid": _identifier(),
        "imageid": _identifier(),
    }
)
LABEL_ROWS: Final = pa.DataFrameSchema(
    {
        "prdtypecode": pa.Column(
            checks=pa.Check(
                lambda codes: codes.isin([str(code) for code in PRDTYPECODES]), name="known_code"
            )
        )
    }
)

X_TYPED: Final = pa.DataFrameSchema(
    {
        "designation": pa.Column(str),
        "description": pa.Column(str, nullable=True),
        "productid": pa.Column("int64", unique=True, report_duplicates="exclude_first"),
        "imageid": pa.Column("int64", unique=True, report_duplicates="exclude_first"),
    },
    index=pa.Index("int64", unique=True),
    strict=True,
)
LABELLED_TYPED: Final = X_TYPED.add_columns(
    {"prdtypecode": pa.Column("int64", pa.Check.isin(PRDTYPECODES))}
)

_REASONS: Final = {
    "not_nullable": "is missing",
    "not_blank": "is blank",
    "positive_integer": "is not a positive integer",
    "known_code": f"is not one of the {len(PRDTYPECODES)} product-type codes",
    "field_uniqueness": "is not unique (an earlier row has it)",
}


@dataclass(frozen=True)
class ContractResult:
    """The rows that keep to the contract, typed, and the ones set aside, with their reason."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    exact_duplicates: int


def validate_raw(
    x: pd.DataFrame, y: pd.DataFrame | None, *, x_name: str, y_name: str = "labels"
) -> ContractResult:
    """Check raw X (and its labels Y) as read from CSV, all columns text; raise on a break.

    `x_name` and `y_name` name the files in errors and in the quarantine's `source` column.
    """
    x = _check_structure(x, X_STRUCTURE, x_name)
    if y is None:
        frame, row_schemas, typed_schema = x, [X_ROWS], X_TYPED
    else:
        y = _aligned_labels(x, _check_structure(y, Y_STRUCTURE, y_name), x_name, y_name)
        frame, row_schemas, typed_schema = x.join(y), [X_ROWS, LABEL_ROWS], LABELLED_TYPED
    duplicated = frame.duplicated(keep="first")
    frame = frame[~duplicated]

    reasons = pd.concat([_row_failures(schema, frame) for schema in row_schemas])
    integers = [name for name in ("productid", "imageid", *Y_COLUMNS) if name in frame]
    typed = frame.drop(index=reasons.index.unique()).astype(dict.fromkeys(integers, "int64"))
    repeats = _row_failures(typed_schema, typed)
    reasons = pd.concat([reasons, repeats])
    typed = typed_schema.validate(typed.drop(index=repeats.index))

    quarantine = frame[frame.index.isin(reasons.index)].copy()
    quarantine["reason"] = reasons.groupby(level=0, sort=False).agg("; ".join)
    quarantine.insert(0, "row_index", quarantine.index)
    quarantine.insert(0, "source", x_name)
    return ContractResult(
        valid=typed,
        quarantine=quarantine.reindex(columns=QUARANTINE_COLUMNS).reset_index(drop=True),
        exact_duplicates=int(duplicated.sum()),
    )


def _check_structure(frame: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> pd.DataFrame:
    """The frame with an int64 index, or a DataContractError naming every structural break."""
    if len(frame.index) == 0:
        raise DataContractError(f"{source}: no rows")
    try:
        return schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        raise DataContractError(f"{source}: {_describe(errors.failure_cases)}") from errors


def _describe(failures: pd.DataFrame) -> str:
    """One line that names each structural break: missing and unexpected columns, bad index."""
    problems = []
    for check, label in (
        ("column_in_dataframe", "missing column"),
        ("column_in_schema", "unexpected column"),
    ):
        names = failures.loc[failures["check"] == check, "failure_case"].astype(str).tolist()
        if names:
            problems.append(f"{label}{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}")
    index = failures[failures["schema_context"] == "Index"]
    not_integer = index[index["check"] != "field_uniqueness"]
    if not not_integer.empty:
        examples = ", ".join(map(repr, not_integer["failure_case"].astype(str).unique()[:3]))
        problems.append(f"index (first column) is not integer, e.g. {examples}")
    elif not index.empty:
        examples = ", ".join(map(repr, index["failure_case"].astype(str).unique()[:3]))
        problems.append(f"index (first column) has repeated values, e.g. {examples}")
    return "; ".join(problems) or failures.to_string()


def _aligned_labels(x: pd.DataFrame, y: pd.DataFrame, x_name: str, y_name: str) -> pd.DataFrame:
    """Y in X's row order, or a DataContractError if they do not hold the same index."""
    if len(x.index) != len(y.index) or not x.index.isin(y.index).all():
        problems = [f"{len(x)} rows in X, {len(y)} in Y"]
        for count, what in (
            (x.index.difference(y.index), "X rows without a label"),
            (y.index.difference(x.index), "labels without an X row"),
        ):
            if len(count):
                problems.append(f"{len(count)} {what} (e.g. index {count[:3].tolist()})")
        raise DataContractError(
            f"{y_name} is not aligned with {x_name} on the index: {'; '.join(problems)}"
        )
    return y.reindex(x.index)


def _row_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.Series:
    """The reason of each row-level failure, indexed by the row's index (one per failure)."""
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        if cases["index"].isna().any():
            raise
        reasons = [
            f"{column} {_REASONS.get(check, f'fails {check}')}"
            for column, check in zip(cases["column"], cases["check"], strict=True)
        ]
        return pd.Series(reasons, index=pd.Index(cases["index"].astype("int64")), dtype="str")
    return pd.Series([], index=pd.Index([], dtype="int64"), dtype="str")
