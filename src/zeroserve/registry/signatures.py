"""Inferring a table signature: named, typed columns from a DataFrame sample or the model.

A model gets a table signature when it needs one: a scikit-learn model with a
``ColumnTransformer`` (it selects columns by name), or a sample with
non-numeric columns. All-numeric models keep the float-matrix signature (with
column names when known), which is the fast path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from zeroserve.errors import InvalidArtifact
from zeroserve.types import Arrays, ColumnSpec, ColumnType

ENCODERS = ("OneHotEncoder", "OrdinalEncoder", "TargetEncoder")
IMPUTERS = ("SimpleImputer", "IterativeImputer", "KNNImputer", "MissingIndicator")
NAN_ESTIMATORS = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


def column_transformer(model: Any) -> Any | None:
    """The model's ColumnTransformer, itself or a step of a pipeline (or wrapped model)."""
    seen = 0
    while model is not None and seen < 8:
        seen += 1
        if type(model).__name__ == "ColumnTransformer":
            return model
        steps = getattr(model, "steps", None)
        if steps:
            for _, step in steps:
                if type(step).__name__ == "ColumnTransformer":
                    return step
            model = steps[0][1]
            continue
        model = getattr(model, "estimator_", None) or getattr(model, "estimator", None)
    return None


def handles_missing(model: Any) -> bool:
    """Whether a matrix model takes NaN itself: an imputer first, or a NaN-aware estimator."""
    steps = getattr(model, "steps", None)
    if steps:
        if type(steps[0][1]).__name__ in IMPUTERS:
            return True
        return handles_missing(steps[-1][1])
    inner = getattr(model, "estimator_", None)
    if inner is not None and inner is not model:
        return handles_missing(inner)
    return type(model).__name__ in NAN_ESTIMATORS


def columns_from_frame(frame: Any) -> list[ColumnSpec]:
    """Column specs from a pandas DataFrame's dtypes and values; refuses what has no type."""
    import pandas as pd

    specs = []
    for name in frame.columns:
        series = frame[name]
        dtype = series.dtype
        nullable = bool(series.isna().any())
        categories: list[Any] | None = None
        if isinstance(dtype, pd.CategoricalDtype):
            cats = dtype.categories
            categories = [c.item() if hasattr(c, "item") else c for c in cats]
            kind = _kind_of(cats.dtype, cats.to_series(), str(name))
        else:
            kind = _kind_of(dtype, series, str(name))
        specs.append(
            ColumnSpec(
                name=str(name),
                type=kind,
                dtype="category" if categories is not None else str(dtype),
                nullable=nullable,
                categories=categories,
            )
        )
    return specs


def _kind_of(dtype: Any, series: Any, name: str) -> ColumnType:
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype):
        return ColumnType.BOOL
    if pd.api.types.is_integer_dtype(dtype):
        return ColumnType.INT
    if pd.api.types.is_float_dtype(dtype):
        return ColumnType.FLOAT
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return ColumnType.DATETIME
    if pd.api.types.is_string_dtype(dtype) or np.dtype(dtype).kind == "O":
        bad = [v for v in series.dropna().tolist() if not isinstance(v, str)]
        if bad:
            raise InvalidArtifact(
                f"sample column {name!r} holds {type(bad[0]).__name__} values (e.g. "
                f"{str(bad[0])[:40]!r}), not strings; convert the column to strings or "
                "numbers (or a pandas category) before saving the sample"
            )
        return ColumnType.STRING
    raise InvalidArtifact(
        f"sample column {name!r} has dtype {dtype}, which zeroserve cannot type; use float, "
        "int, bool, string, category or datetime64 columns"
    )


def columns_from_model(model: Any) -> list[ColumnSpec] | None:
    """Column specs from a fitted ColumnTransformer: encoders' categories say which are strings."""
    ct = column_transformer(model)
    if ct is None:
        return None
    names = [str(n) for n in getattr(ct, "feature_names_in_", [])]
    if not names:
        raise InvalidArtifact(
            "this pipeline's ColumnTransformer was fitted on an array, not a DataFrame, so its "
            "columns have no names; fit it on a pandas DataFrame, or pass --sample"
        )
    kinds: dict[str, ColumnSpec] = {}
    indices: dict[str, list[int]] = getattr(ct, "_transformer_to_input_indices", {})
    transformers = {name: trans for name, trans, _ in getattr(ct, "transformers_", [])}
    for tname, idx in indices.items():
        encoder = _encoder(transformers.get(tname))
        for i, col in enumerate(idx):
            name = names[col]
            if encoder is not None and i < len(encoder.categories_):
                cats = encoder.categories_[i]
                present = [c for c in cats.tolist() if not (isinstance(c, float) and np.isnan(c))]
                if cats.dtype.kind in "OUS":
                    kinds[name] = ColumnSpec(name=name, type=ColumnType.STRING, dtype="object")
                    continue
                kind = ColumnType.INT if cats.dtype.kind in "iu" else ColumnType.FLOAT
                if all(float(c).is_integer() for c in present) and kind is ColumnType.INT:
                    kinds[name] = ColumnSpec(name=name, type=kind, dtype=str(cats.dtype))
                    continue
            kinds[name] = ColumnSpec(name=name, type=ColumnType.FLOAT, dtype="float64")
    return [
        kinds.get(n) or ColumnSpec(name=n, type=ColumnType.FLOAT, dtype="float64") for n in names
    ]


def _encoder(transformer: Any) -> Any | None:
    if transformer is None:
        return None
    for step in [transformer, *[s for _, s in getattr(transformer, "steps", [])]]:
        if type(step).__name__ in ENCODERS and hasattr(step, "categories_"):
            return step
    return None


def model_examples(model: Any) -> dict[str, Any]:
    """A value the model knows for each encoded column (its encoder's first category)."""
    ct = column_transformer(model)
    if ct is None:
        return {}
    names = [str(n) for n in getattr(ct, "feature_names_in_", [])]
    transformers = {name: trans for name, trans, _ in getattr(ct, "transformers_", [])}
    found: dict[str, Any] = {}
    for tname, idx in getattr(ct, "_transformer_to_input_indices", {}).items():
        encoder = _encoder(transformers.get(tname))
        if encoder is None:
            continue
        for i, col in enumerate(idx):
            if i < len(encoder.categories_) and len(encoder.categories_[i]):
                value = encoder.categories_[i][0]
                found[names[col]] = value.item() if hasattr(value, "item") else value
    return found


def example_rows(
    columns: list[ColumnSpec],
    frame: Any | None,
    rows: int = 4,
    examples: dict[str, Any] | None = None,
) -> Arrays:
    """Rows to probe the model with: the sample's first rows, else one typical value each."""
    from zeroserve.protocols.table import to_column

    arrays: Arrays = {}
    for col in columns:
        if frame is not None and col.name in frame.columns:
            series = frame[col.name].iloc[:rows]
            values = series.astype(object).where(series.notna(), None).tolist()
            if col.type is ColumnType.DATETIME:
                values = [None if v is None else str(v) for v in values]
        else:
            known = (examples or {}).get(col.name)
            values = [known if known is not None else _typical(col)] * 2
        arrays[col.name] = to_column(values, col.model_copy(update={"nullable": True}), "sample")
    return arrays


def _typical(col: ColumnSpec) -> Any:
    if col.categories:
        return col.categories[0]
    return {
        ColumnType.FLOAT: 0.0,
        ColumnType.INT: 0,
        ColumnType.BOOL: False,
        ColumnType.STRING: "",
        ColumnType.DATETIME: "2000-01-01T00:00:00",
    }[col.type]


def with_nullable(
    columns: list[ColumnSpec], probe: Arrays, predict: Callable[[Arrays], Any]
) -> list[ColumnSpec]:
    """Mark columns nullable where the model itself accepts a missing value there.

    Each column in turn is set to null in the probe rows; if the model predicts,
    it handles missing values in that column (an imputer, a NaN-aware estimator,
    an encoder that ignores unknowns).
    """
    out = []
    for col in columns:
        if col.nullable:
            out.append(col)
            continue
        trial = dict(probe)
        trial[col.name] = _nulls(col, len(probe[col.name]))
        try:
            predict(trial)
        except Exception:
            out.append(col)
            continue
        out.append(col.model_copy(update={"nullable": True}))
    return out


def _nulls(col: ColumnSpec, n: int) -> np.ndarray[Any, Any]:
    dtype = col.model_copy(update={"nullable": True}).tensor().dtype
    if dtype == "object":
        return np.full(n, None, dtype=object)
    if dtype.startswith("datetime"):
        return np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    return np.full(n, np.nan, dtype=np.float64)
