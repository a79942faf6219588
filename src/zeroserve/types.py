"""Shared records: signatures, endpoint specs, usage records.

Specs are pydantic models because they cross the API and live in the
registry as JSON; hot-path records are plain dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Open Inference Protocol datatypes <-> numpy dtypes.
OIP_TO_NUMPY: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
NUMPY_TO_OIP: dict[str, str] = {v: k for k, v in OIP_TO_NUMPY.items()}
# Datetime columns travel as ISO 8601 strings on the wire and as datetime64 inside.
NUMPY_TO_OIP["datetime64[ns]"] = "BYTES"

Arrays = dict[str, np.ndarray[Any, Any]]
"""Named tensors, the currency between gateway, worker and runtime."""


class Flavor(StrEnum):
    SKLEARN = "sklearn"
    ONNX = "onnx"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    PYTHON = "python"


class Stage(StrEnum):
    NONE = "none"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class Mode(StrEnum):
    REALTIME = "realtime"
    SERVERLESS = "serverless"
    ASYNC = "async"


class TensorSpec(BaseModel):
    """One named input or output: dtype and shape, ``-1`` for a free dimension."""

    model_config = ConfigDict(frozen=True)

    name: str
    dtype: str = Field(description="numpy dtype name, e.g. float32")
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch)")
    allow_nan: bool = False
    names: list[str] | None = Field(
        default=None, description="column names along the last axis, when known"
    )

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in NUMPY_TO_OIP:
            raise ValueError(f"unsupported dtype {value!r}; use one of {sorted(NUMPY_TO_OIP)}")
        return value

    @property
    def datatype(self) -> str:
        return NUMPY_TO_OIP[self.dtype]

    def describe_shape(self) -> str:
        return "[" + ", ".join("N" if d < 0 else str(d) for d in self.shape) + "]"


class ColumnType(StrEnum):
    """The kind of values a table column holds."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"
    DATETIME = "datetime"


# The dtype a column travels in between gateway and replica: nullable ints are
# floats (NaN for null), nullable bools and strings are objects (None for null).
_COLUMN_TENSOR_DTYPES: dict[tuple[ColumnType, bool], str] = {
    (ColumnType.FLOAT, False): "float64",
    (ColumnType.FLOAT, True): "float64",
    (ColumnType.INT, False): "int64",
    (ColumnType.INT, True): "float64",
    (ColumnType.BOOL, False): "bool",
    (ColumnType.BOOL, True): "object",
    (ColumnType.STRING, False): "object",
    (ColumnType.STRING, True): "object",
    (ColumnType.DATETIME, False): "datetime64[ns]",
    (ColumnType.DATETIME, True): "datetime64[ns]",
}

Scalar = str | int | float | bool


class ColumnSpec(BaseModel):
    """One named column of a table input, with its type and whether it may be null."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: ColumnType
    dtype: str = Field(
        "", description="the pandas dtype the model was trained with, e.g. float32, category"
    )
    nullable: bool = False
    categories: list[Scalar] | None = Field(
        default=None, description="the known values of a categorical column"
    )

    def tensor(self) -> TensorSpec:
        """The column as one named 1-D input (v2: one input per column)."""
        dtype = _COLUMN_TENSOR_DTYPES[(self.type, self.nullable)]
        return TensorSpec(name=self.name, dtype=dtype, shape=[-1], allow_nan=self.nullable)


class Signature(BaseModel):
    """What a model version takes and returns.

    A *tensor* signature lists named ``inputs``. A *table* signature lists
    ``columns``; its ``inputs`` are then one 1-D tensor per column, derived.
    ``classes`` are a classifier's class names, in the order of its probabilities.
    """

    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec]
    columns: list[ColumnSpec] | None = None
    classes: list[Scalar] | None = None

    @model_validator(mode="after")
    def _columns_are_inputs(self) -> Signature:
        if self.columns is not None:
            if not self.columns:
                raise ValueError("a table signature needs at least one column")
            names = [c.name for c in self.columns]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"columns {dupes} appear more than once")
            self.inputs = [c.tensor() for c in self.columns]
        elif not self.inputs:
            raise ValueError("a signature needs inputs (tensors) or columns (a table)")
        return self

    @property
    def is_table(self) -> bool:
        return self.columns is not None

    def input(self, name: str) -> TensorSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def column(self, name: str) -> ColumnSpec | None:
        for col in self.columns or ():
            if col.name == name:
                return col
        return None

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def select_outputs(self, names: list[str] | None) -> Signature:
        """The signature answering only ``names`` (a variant's ``outputs`` option)."""
        if not names:
            return self
        known = self.output_names
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"outputs {unknown} are not outputs of this model; it returns: {', '.join(known)}"
            )
        return self.model_copy(update={"outputs": [s for s in self.outputs if s.name in names]})


class ScalingSpec(BaseModel):
    """How many replicas a variant runs and when it scales."""

    model_config = ConfigDict(validate_assignment=True)

    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 2
    provisioned: Annotated[int, Field(ge=0, description="replicas kept warm at all times")] = 0
    target_concurrency: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="in-flight requests per replica; default: half of max_batch_size, "
        "since a batching replica serves a whole batch at once",
    )
    target_utilization: Annotated[float, Field(gt=0, le=1)] = Field(
        0.7, description="busy fraction of replicas above which the autoscaler adds one"
    )
    max_queue: Annotated[int, Field(ge=1)] = 1024
    idle_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    scale_down_delay_s: Annotated[float, Field(ge=0)] = 30.0

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas "
                f"({self.max_replicas}); raise max_replicas or lower min_replicas"
            )
        if self.provisioned > self.max_replicas:
            raise ValueError(
                f"provisioned ({self.provisioned}) is above max_replicas ({self.max_replicas})"
            )
        return self


class VariantSpec(BaseModel):
    """A model version with a traffic weight and its resources."""

    name: str
    model: str
    version: int
    follow: str | None = Field(
        None,
        description="an alias or '@stage' this variant follows: promoting another version "
        "there redeploys it; None: pinned to ``version``",
    )
    weight: Annotated[float, Field(ge=0)] = 1.0
    max_batch_size: Annotated[int, Field(ge=1)] = 64
    max_batch_wait_ms: Annotated[float, Field(ge=0)] = 0.0
    memory_limit_mb: Annotated[int, Field(ge=16)] | None = None
    max_concurrency: Annotated[int, Field(ge=1)] = 1
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    outputs: list[str] | None = Field(
        None,
        description='answer only these outputs, e.g. ["label"] or ["probabilities"]; '
        "default: every output of the model",
    )

    @property
    def target_concurrency(self) -> float:
        """In-flight requests per replica the autoscaler aims at."""
        if self.scaling.target_concurrency is not None:
            return self.scaling.target_concurrency
        return max(1.0, self.max_batch_size / 2)


class EndpointSpec(BaseModel):
    """A named entry point: its mode, variants and limits."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
    mode: Mode = Mode.REALTIME
    variants: list[VariantSpec]
    shadow: VariantSpec | None = None
    request_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_concurrency: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _mode_fits_scaling(self) -> EndpointSpec:
        if not self.variants:
            raise ValueError("variants is empty; an endpoint serves at least one model version")
        names = [v.name for v in self.variants] + ([self.shadow.name] if self.shadow else [])
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("variant weights must add up to more than 0")
        if self.mode == Mode.REALTIME:
            for v in self.variants:
                if v.scaling.min_replicas < 1:
                    raise ValueError(
                        f"realtime endpoints keep at least one warm replica, but variant "
                        f"{v.name!r} has min_replicas 0; use mode serverless to scale to zero"
                    )
        return self

    def variant(self, name: str) -> VariantSpec | None:
        for v in self.variants:
            if v.name == name:
                return v
        return None


class ModelVersionInfo(BaseModel):
    """A registered, immutable model version as the API returns it."""

    model: str
    version: int
    flavor: Flavor
    signature: Signature
    stage: Stage
    artifact_uri: str
    created_at: float
    trusted: bool = False
    compiled_from: int | None = None
    description: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)


class ModelInfo(BaseModel):
    name: str
    created_at: float
    description: str = ""
    versions: list[ModelVersionInfo] = Field(default_factory=list)


@dataclass(slots=True)
class UsageRecord:
    """One served batch's usage, aggregated in memory by the meter."""

    endpoint: str
    variant: str
    requests: int
    rows: int
    compute_s: float
    bytes_in: int
    bytes_out: int
    cold_starts: int = 0
    """Batches that held a request which waited for a replica to start (0 or 1 per batch)."""


class WindowStats(BaseModel):
    """Outcomes of one variant over one window (the last 10 s, 1 min or 5 min)."""

    window_s: int
    requests: int
    errors: int = Field(description="answers with a 5xx status")
    client_errors: int = Field(description="answers with a 4xx status")
    error_rate: float = Field(description="errors / requests")
    requests_per_s: float
    p50_ms: float | None = Field(description="median latency, failures included")
    p99_ms: float | None
    by_status: dict[str, int]
    by_cause: dict[str, int] = Field(description="error codes, e.g. model_error, replica_crashed")


class VariantStats(BaseModel):
    """One variant's (or the shadow's) outcomes in every window."""

    endpoint: str
    variant: str
    role: str = Field(description="primary or shadow")
    windows: dict[str, WindowStats]
