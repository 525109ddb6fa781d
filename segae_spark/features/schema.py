"""Which input columns are features, and of which kind.

SegmentAE silently left narrow integer columns (int16, uint8) unscaled because
it picked "numeric" columns by a short list of dtypes. Here every Spark numeric
type (byte, short, int, long, float, double, decimal) and boolean is numeric;
strings are categorical; dates, timestamps and nested types are never features
unless the user names them, in which case we refuse them with a clear error.
A string column the user names as numeric (numbers exported as text) is
accepted: training refuses it if any value does not parse as a number
(:mod:`segae_spark.features.casting`), and at scoring time a value that does
not parse becomes null and is imputed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DataType,
    NumericType,
    StringType,
    StructType,
)

from segae_spark.errors import ConfigError, SchemaError


def column(name: str) -> Column:
    """The column called exactly ``name``: dots and backticks in it are not syntax."""
    return F.col("`" + name.replace("`", "``") + "`")


# The preprocessing pipeline's intermediate columns are "__segae_<step>_<user column>".
_INTERMEDIATE = re.compile(r"^__segae_[a-z]+_")


def source_column(name: str) -> str:
    """The user's column behind an intermediate column of the preprocessing pipeline (messages name it)."""
    return _INTERMEDIATE.sub("", name)


def stage_columns(stage, dataset, what: str) -> tuple[list[str], list[str]]:
    """``stage``'s (inputCols, outputCols), checked against each other and ``dataset``.

    ConfigError when their lengths differ; SchemaError naming the input
    columns (``what``: "numeric column(s)", ...) that ``dataset`` lacks.
    """
    inputs, outputs = stage.getInputCols(), stage.getOutputCols()
    if len(inputs) != len(outputs):
        raise ConfigError(f"{type(stage).__name__} needs as many outputCols as inputCols, got {len(inputs)} and {len(outputs)}")
    missing = [c for c in inputs if c not in dataset.columns]
    if missing:
        raise SchemaError(f"{what} {missing} are not in the data")
    return inputs, outputs


def is_numeric_type(data_type: DataType) -> bool:
    return isinstance(data_type, (NumericType, BooleanType))


def is_categorical_type(data_type: DataType) -> bool:
    return isinstance(data_type, StringType)


@dataclass(frozen=True)
class FeatureSpec:
    """The resolved feature columns of a table, in a fixed order."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    types: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def to_dict(self) -> dict:
        return {"numeric": list(self.numeric), "categorical": list(self.categorical), "types": dict(self.types)}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSpec":
        return cls(tuple(data["numeric"]), tuple(data["categorical"]), dict(data.get("types", {})))

    def _trained_as_string(self, name: str, data_type: DataType) -> bool:
        return is_categorical_type(data_type) and self.types.get(name) == StringType().simpleString()

    def check_input(self, schema: StructType) -> None:
        """Raise SchemaError if ``schema`` lacks a feature column or changed its kind."""
        by_name = {f.name: f.dataType for f in schema.fields}
        missing = [c for c in self.columns if c not in by_name]
        if missing:
            raise SchemaError(
                f"input is missing feature column(s) {missing}; the model was trained on {list(self.columns)}"
            )
        wrong = [c for c in self.numeric if not (is_numeric_type(by_name[c]) or self._trained_as_string(c, by_name[c]))]
        wrong += [c for c in self.categorical if not (is_categorical_type(by_name[c]) or is_numeric_type(by_name[c]))]
        if wrong:
            detail = ", ".join(f"{c}: {by_name[c].simpleString()} (trained as {self.types.get(c, '?')})" for c in wrong)
            raise SchemaError(f"feature column(s) changed type: {detail}")


def resolve_features(
    schema: StructType,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    exclude: list[str] | None = None,
) -> FeatureSpec:
    """Pick the feature columns of ``schema``.

    Explicit ``numeric`` / ``categorical`` lists win; when both are empty every
    column not in ``exclude`` is classified by its type, and columns of other
    types (dates, timestamps, arrays) are skipped.
    """
    by_name = {f.name: f.dataType for f in schema.fields}
    excluded = set(exclude or [])
    for name in list(numeric or []) + list(categorical or []) + list(exclude or []):
        if name not in by_name:
            raise SchemaError(f"column {name!r} named in the feature config is not in the input; columns: {list(by_name)}")
    if numeric or categorical:
        num = [c for c in (numeric or []) if c not in excluded]
        cat = [c for c in (categorical or []) if c not in excluded]
        bad = [c for c in num if not (is_numeric_type(by_name[c]) or is_categorical_type(by_name[c]))]
        if bad:
            raise SchemaError(
                "numeric feature column(s) " + ", ".join(f"{c} ({by_name[c].simpleString()})" for c in bad)
                + " are neither numbers nor strings of numbers; list them as categorical or cast them"
            )
        bad = [c for c in cat if not (is_categorical_type(by_name[c]) or is_numeric_type(by_name[c]))]
        if bad:
            raise SchemaError(
                "categorical feature column(s) " + ", ".join(f"{c} ({by_name[c].simpleString()})" for c in bad)
                + " must be strings or integer codes"
            )
    else:
        num = [n for n, t in by_name.items() if n not in excluded and is_numeric_type(t)]
        cat = [n for n, t in by_name.items() if n not in excluded and is_categorical_type(t)]
    if not num and not cat:
        raise SchemaError(f"no feature columns left after excluding {sorted(excluded)}; columns: {list(by_name)}")
    types = {c: by_name[c].simpleString() for c in num + cat}
    return FeatureSpec(tuple(num), tuple(cat), types)
