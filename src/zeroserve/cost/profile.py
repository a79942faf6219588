"""The workload profile: what a model's traffic looks like over a month."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zeroserve.errors import BadRequest

LARGEST = 1e15
"""Upper bound of every quantity: beyond it money arithmetic overflows; no workload is near it."""
Positive = Annotated[float, Field(gt=0, le=LARGEST)]
NonNegative = Annotated[float, Field(ge=0, le=LARGEST)]


class WorkloadProfile(BaseModel):
    """One model's monthly traffic and needs, the advisor's input.

    Durations are compute seconds per request on the reference hardware; give
    per-target values in ``duration_s_by_target`` where they differ (keys are a
    candidate id such as ``aws.sagemaker.realtime:ml.g5.xlarge``, a target id,
    or a dotted prefix such as ``aws.lambda``).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "workload"
    requests_per_month: NonNegative
    duration_s: Positive | None = Field(
        None,
        description="compute seconds per request; LLM work may give self_host_tokens_per_s instead",
    )
    duration_s_by_target: dict[str, Positive] = Field(default_factory=dict)
    memory_mb: Annotated[int, Field(ge=1, le=int(LARGEST))] = 1024
    vcpus: Positive = 1.0
    payload_in_bytes: Annotated[int, Field(ge=0, le=int(LARGEST))] = 0
    payload_out_bytes: Annotated[int, Field(ge=0, le=int(LARGEST))] = 0
    max_payload_bytes: Annotated[int, Field(ge=0, le=int(LARGEST))] | None = Field(
        None, description="largest request or response; default: the larger average"
    )
    peak_concurrency: Positive | None = Field(
        None,
        description="requests in flight at the busiest moment; default: average x peak_to_average",
    )
    peak_to_average: Annotated[float, Field(ge=1, le=LARGEST)] = 1.0
    replica_concurrency: Positive = Field(
        1.0, description="measured capacity: concurrent requests one replica serves within the SLA"
    )
    min_instances: Annotated[int, Field(ge=1, le=int(LARGEST))] = Field(
        1, description="floor for always-on targets"
    )
    gpu: str | None = Field(
        None, description="None: no GPU; 'any' or a type: T4, L4, A10G, A100, H100"
    )
    gpu_memory_gb: NonNegative = 0.0
    latency_sla_p95_s: Positive | None = Field(
        None, description="p95 latency, cold starts included"
    )
    cold_start_fraction: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="share of requests that meet a cold start; default: modelled per target"
    )
    model_load_s: NonNegative = Field(0.0, description="added to every target's cold start")
    allow_async: bool = Field(False, description="clients accept asynchronous answers")
    input_tokens_per_request: Annotated[int, Field(ge=0, le=int(LARGEST))] = 0
    output_tokens_per_request: Annotated[int, Field(ge=0, le=int(LARGEST))] = 0
    self_host_tokens_per_s: Positive | None = Field(
        None, description="output tokens per second one GPU replica sustains (measured or given)"
    )
    cached_input_share: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="share of input tokens read from the provider's prompt cache"
    )
    cache_write_share: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="share of input tokens written to the prompt cache"
    )
    batch_share: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="share of calls that can wait for a batch API (hours, at a discount)"
    )
    rows_per_request: Positive = Field(1.0, description="rows (records) per request, batch work")
    rows_per_s: Positive | None = Field(
        None, description="rows a second one batch instance processes (measured or given)"
    )
    commitments: dict[str, str] = Field(
        default_factory=dict,
        description="savings plan or reserved term per target: {aws.ec2.ondemand: 1yr-no-upfront}",
    )
    log_bytes_per_request: Annotated[int, Field(ge=0, le=int(LARGEST))] = 256
    artifact_gb: NonNegative = 1.0
    instance_types: dict[str, str] = Field(
        default_factory=dict,
        description="pin an option per target: {aws.sagemaker.realtime: ml.m5.xlarge}",
    )
    memory_mb_by_target: dict[str, int] = Field(
        default_factory=dict, description="pin a configured memory size per target"
    )
    free_tier: bool = False
    hours_per_month: Positive | None = Field(None, description="default: the catalog's (730)")

    @model_validator(mode="after")
    def _duration_known(self) -> WorkloadProfile:
        if self.duration_s is None and not (self.is_llm and self.self_host_tokens_per_s):
            raise ValueError(
                "give duration_s (or, for LLM work, output tokens and self_host_tokens_per_s)"
            )
        if self.cached_input_share + self.cache_write_share > 1:
            raise ValueError(
                "cached_input_share + cache_write_share is over 1: "
                "they are shares of the same input tokens"
            )
        return self

    @property
    def is_llm(self) -> bool:
        return self.output_tokens_per_request > 0

    def base_duration_s(self) -> float:
        if self.duration_s is not None:
            return self.duration_s
        assert self.self_host_tokens_per_s is not None
        # Throughput share: one GPU replica emits self_host_tokens_per_s in aggregate.
        return self.output_tokens_per_request / self.self_host_tokens_per_s

    def duration_for(self, candidate_id: str) -> float:
        """Duration on one candidate: the most specific key in duration_s_by_target wins."""
        key = candidate_id
        while key:
            if key in self.duration_s_by_target:
                return self.duration_s_by_target[key]
            if ":" in key:
                key = key.rsplit(":", 1)[0]
            elif "." in key:
                key = key.rsplit(".", 1)[0]
            else:
                break
        return self.base_duration_s()

    def payload_bytes(self) -> int:
        return max(self.max_payload_bytes or 0, self.payload_in_bytes, self.payload_out_bytes)

    def peak(self, seconds_per_month: float) -> float:
        """Peak requests in flight: measured, or average concurrency x peak_to_average."""
        if self.peak_concurrency is not None:
            return self.peak_concurrency
        average = self.requests_per_month * self.base_duration_s() / seconds_per_month
        return average * self.peak_to_average

    def scaled(self, requests_per_month: float) -> WorkloadProfile:
        """The same traffic shape at another volume: peak concurrency scales with it."""
        update: dict[str, Any] = {"requests_per_month": requests_per_month}
        if self.peak_concurrency is not None and self.requests_per_month > 0:
            update["peak_concurrency"] = (
                self.peak_concurrency * requests_per_month / self.requests_per_month
            )
        return self.model_copy(update=update)


def load_profile(path: str | Path) -> WorkloadProfile:
    """Read a profile from YAML or JSON; errors name the field."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise BadRequest(f"cannot read profile {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise BadRequest(f"profile {path} is not valid YAML: {exc}") from exc
    try:
        return WorkloadProfile.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()[:5]]
        raise BadRequest(f"profile {path} is invalid: " + "; ".join(parts)) from exc
