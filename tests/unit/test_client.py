"""The client against an in-process transport speaking the server's wire format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from zeroserve import errors
from zeroserve.client import Client, parse_model_ref

METADATA = {
    "name": "m",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ],
}


def fake_server(seen: list[dict[str, Any]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/models/m":
            return httpx.Response(200, json=METADATA)
        if path == "/v1/endpoints/m/invocations":
            body = json.loads(request.content)
            seen.append(body)
            columns = body["inputs"]
            rows = len(next(iter(columns.values())))
            return httpx.Response(
                200,
                json={"outputs": {"label": [1] * rows, "probabilities": [[0.25, 0.75]] * rows}},
            )
        if path == "/v1/endpoints/missing/invocations":
            return httpx.Response(
                404,
                json={"error": "no endpoint named 'missing'", "code": "endpoint_not_found"},
            )
        if path == "/api/deploy":
            return httpx.Response(
                409, json={"error": "would switch v1 -> v2; pass --update", "code": "conflict"}
            )
        if path == "/v1/endpoints/busy/invocations":
            return httpx.Response(
                429,
                json={"error": "queue full", "code": "too_many_requests"},
                headers={"retry-after": "3"},
            )
        return httpx.Response(500, text="boom")

    return httpx.MockTransport(handle)


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def client(seen: list[dict[str, Any]]) -> Client:
    return Client("http://zs.test", transport=fake_server(seen))


def test_numpy_in_arrays_out_with_signature_dtypes(client: Client, seen: list[Any]) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = client.invoke("m", x)
    assert seen[0] == {"inputs": {"input": x.tolist()}}
    assert out["label"].dtype == np.int64 and out["label"].tolist() == [1, 1]
    assert out["probabilities"].dtype == np.float32
    assert out["probabilities"].shape == (2, 2)


def test_dataframe_in_dataframe_out_by_column(client: Client, seen: list[Any]) -> None:
    frame = pd.DataFrame(
        {"b": [1.5, float("nan")], "a": ["x", None], "t": pd.to_datetime(["2026-01-02", None])},
        index=[10, 11],
    )
    out = client.invoke("m", frame)
    assert seen[0]["inputs"] == {
        "b": [1.5, None],
        "a": ["x", None],
        "t": ["2026-01-02T00:00:00", None],
    }
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == [10, 11]
    assert list(out.columns) == ["label", "probabilities_0", "probabilities_1"]
    assert out["probabilities_1"].tolist() == [0.75, 0.75]


def test_server_errors_raise_the_matching_class_with_its_message(client: Client) -> None:
    with pytest.raises(errors.EndpointNotFound, match="no endpoint named 'missing'"):
        client.invoke("missing", [[1, 2, 3]])
    with pytest.raises(errors.Conflict, match="pass --update") as conflict:
        client.deploy("m:2", endpoint="m")
    assert conflict.value.status_code == 409
    with pytest.raises(errors.TooManyRequests) as busy:
        client.invoke("busy", [[1, 2, 3]])
    assert busy.value.retry_after_s == 3.0
    with pytest.raises(errors.ZeroserveError, match="boom") as other:
        client.get("/api/other")
    assert other.value.status_code == 500


def test_unreachable_server_is_its_own_error() -> None:
    client = Client("http://127.0.0.1:9")
    with pytest.raises(errors.ServerUnreachable, match="cannot reach zeroserve"):
        client.models()


def test_missing_files_are_refused_before_sending(client: Client, tmp_path: Path) -> None:
    with pytest.raises(errors.BadRequest, match=r"model file .* does not exist"):
        client.register("m", tmp_path / "nope.skops")
    model = tmp_path / "m.skops"
    model.write_bytes(b"x")
    with pytest.raises(errors.BadRequest, match=r"--sample file .* does not exist"):
        client.register("m", model, sample=tmp_path / "nope.npy")
    bad = tmp_path / "sig.json"
    bad.write_text("{bad")
    with pytest.raises(errors.BadRequest, match="not valid JSON"):
        client.register("m", model, signature=bad)


def test_model_references() -> None:
    assert parse_model_ref("fraud") == ("fraud", None)
    assert parse_model_ref("fraud:3") == ("fraud", "3")
    assert parse_model_ref("fraud:champion") == ("fraud", "champion")
    assert parse_model_ref("fraud@production") == ("fraud", "@production")
