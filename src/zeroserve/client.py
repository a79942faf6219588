"""The Python client for a zeroserve server; the CLI is built on it.

    >>> from zeroserve import Client
    >>> zs = Client()                      # ZEROSERVE_URL / ZEROSERVE_API_KEY or loopback
    >>> zs.register("fraud", "model.skops", sample="train.parquet")
    >>> zs.deploy("fraud@production", follow=True)
    >>> zs.invoke("fraud", frame)          # a DataFrame in, a DataFrame out

``invoke`` takes a NumPy array (one input), a dict of arrays or columns, a pandas
DataFrame (sent by column name) or plain JSON rows, and answers in the same kind:
a dict of NumPy arrays with the signature's dtypes for arrays and dicts, a
DataFrame with the input's index for a DataFrame, the server's JSON for rows.
Every error the server reports is raised as the matching class from
``zeroserve.errors`` with the server's message; a server that does not answer
raises ``ServerUnreachable``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from zeroserve import __version__, errors
from zeroserve.errors import (
    BadRequest,
    JobFailed,
    RequestTimeout,
    ServerUnreachable,
    ZeroserveError,
)
from zeroserve.settings import DEFAULT_PORT
from zeroserve.types import OIP_TO_NUMPY

__all__ = ["AsyncJob", "Client", "error_from_response", "parse_model_ref"]

JOB_DONE = {"succeeded", "failed", "dead", "cancelled"}
BATCH_RUNNING = "running"


def parse_model_ref(text: str) -> tuple[str, str | None]:
    """``fraud``, ``fraud:3``, ``fraud:champion`` or ``fraud@production`` -> (name, ref)."""
    if "@" in text:
        name, _, stage = text.partition("@")
        return name, f"@{stage}"
    name, _, ref = text.partition(":")
    return name, ref or None


def _error_classes() -> dict[str, type[ZeroserveError]]:
    found: dict[str, type[ZeroserveError]] = {}
    todo: list[type[ZeroserveError]] = [ZeroserveError]
    while todo:
        cls = todo.pop()
        # The public tree (errors.py) wins over a subsystem's class that shares its code.
        current = found.get(cls.code)
        public = cls.__module__ == "zeroserve.errors"
        if current is None or (public and current.__module__ != "zeroserve.errors"):
            found[cls.code] = cls
        todo.extend(cls.__subclasses__())
    return found


_BY_STATUS: dict[int, type[ZeroserveError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.InvalidInput,
    429: errors.TooManyRequests,
    503: errors.ServiceUnavailable,
    504: errors.RequestTimeout,
}


def error_from_response(response: httpx.Response) -> ZeroserveError:
    """The package's exception for an error answer, carrying the server's message."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"error": response.text.strip() or response.reason_phrase}
    message = str(body.get("error") or body.get("detail") or response.reason_phrase)
    cls = _error_classes().get(str(body.get("code")))
    if cls is None:
        cls = _BY_STATUS.get(response.status_code, ZeroserveError)
    exc = cls.__new__(cls)
    details = body.get("details")
    ZeroserveError.__init__(exc, message, **(details if isinstance(details, dict) else {}))
    exc.status_code = response.status_code
    setattr(exc, "http_status", response.status_code)  # noqa: B010 - marks a server answer
    if isinstance(exc, errors.TooManyRequests):
        retry = response.headers.get("retry-after", "1")
        exc.retry_after_s = float(retry) if retry.replace(".", "", 1).isdigit() else 1.0
    return exc


@dataclass(frozen=True)
class AsyncJob:
    """A submitted async request; ``Client.wait`` turns it into the answer."""

    job_id: str
    endpoint: str
    kind: str
    index: Any = None


class Client:
    """Talks to the control API (``/api``) and the data plane of one server."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        default = f"http://127.0.0.1:{DEFAULT_PORT}"
        self.url = (url or os.environ.get("ZEROSERVE_URL") or default).rstrip("/")
        key = api_key or os.environ.get("ZEROSERVE_API_KEY")
        # A non-simple header: the server refuses state changes from browsers without one.
        headers = {"x-zeroserve-client": f"zeroserve-python/{__version__}"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout_s, transport=transport
        )
        self._metadata: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # HTTP
    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; raises the package's error for any 4xx/5xx answer."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ServerUnreachable(
                f"cannot reach zeroserve at {self.url}: start it with `zeroserve up` "
                "or set ZEROSERVE_URL"
            ) from None
        except httpx.TimeoutException:
            raise RequestTimeout(
                f"zeroserve at {self.url} did not answer {method} {path} in time"
            ) from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"talking to zeroserve at {self.url} failed: {exc}") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the decoded JSON answer (None for an empty one)."""
        response = self.send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    # models
    def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/models")
        return result

    def model(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/api/models/{name}")
        return result

    def register(
        self,
        name: str,
        path: str | Path,
        *,
        flavor: str | None = None,
        trust: bool = False,
        compile: str | None = None,
        tolerance: float = 1e-5,
        sample: str | Path | None = None,
        signature: str | Path | dict[str, Any] | None = None,
        entrypoint: str | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """Register a model file as the next version of ``name``; the version's info."""
        model_file = Path(path)
        if not model_file.exists():
            raise BadRequest(f"model file {model_file} does not exist; check the path")
        sample_file = _existing_file(sample, "--sample file") if sample is not None else None
        form: dict[str, str] = {
            "trust": str(trust).lower(),
            "tolerance": str(tolerance),
            "description": description,
        }
        for key, value in (("flavor", flavor), ("compile", compile), ("entrypoint", entrypoint)):
            if value is not None:
                form[key] = value
        if signature is not None:
            form["signature"] = _signature_text(signature)
        with ExitStack() as stack:
            files: dict[str, Any] = {
                "file": (model_file.name, stack.enter_context(model_file.open("rb")))
            }
            if sample_file is not None:
                files["sample"] = (sample_file.name, stack.enter_context(sample_file.open("rb")))
            result: dict[str, Any] = self.post(
                f"/api/models/{name}/versions", files=files, data=form
            )
        return result

    def promote(
        self, name: str, version: int, stage: str = "production", archive_existing: bool = True
    ) -> dict[str, Any]:
        """Move a version to a stage; endpoints following ``name@stage`` redeploy."""
        result: dict[str, Any] = self.post(
            f"/api/models/{name}/versions/{version}/stage",
            json={"stage": stage, "archive_existing": archive_existing},
        )
        return result

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point an alias at a version; endpoints following ``name:alias`` redeploy."""
        result: dict[str, Any] = self.request(
            "PUT", f"/api/models/{name}/aliases/{alias}", json={"version": version}
        )
        return result

    def delete_model(self, name: str) -> None:
        """Delete a model and all its versions (refused while an endpoint serves it)."""
        self.request("DELETE", f"/api/models/{name}")

    # endpoints
    def deploy(
        self,
        model: str,
        ref: str | int | None = None,
        *,
        endpoint: str | None = None,
        update: bool = False,
        follow: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """Serve a model version as an endpoint; returns once it is ready.

        ``model`` may carry the reference (``fraud:3``, ``fraud@production``).
        Switching an existing endpoint to another version needs ``update=True``;
        ``follow=True`` keeps an alias or stage reference and redeploys on promotion.
        ``options`` are the deploy request's fields (``min_replicas``, ``mode``, ...).
        """
        name, parsed = parse_model_ref(model)
        body = {
            "model": name,
            "ref": str(ref) if ref is not None else parsed,
            "endpoint": endpoint,
            "update": update,
            "follow": follow,
            **options,
        }
        result: dict[str, Any] = self.post(
            "/api/deploy", json={k: v for k, v in body.items() if v is not None}
        )
        return result

    def update_endpoint(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change an endpoint's version (``ref``), ``follow`` or scaling in place."""
        body = {k: v for k, v in changes.items() if v is not None}
        result: dict[str, Any] = self.request("PATCH", f"/api/endpoints/{name}", json=body)
        return result

    def endpoints(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/endpoints")
        return result

    def endpoint(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/api/endpoints/{name}")
        return result

    def delete_endpoint(self, name: str) -> None:
        self.request("DELETE", f"/api/endpoints/{name}")

    # inference
    def invoke(self, endpoint: str, data: Any) -> Any:
        """One request to the endpoint's JSON route; the answer in the input's kind."""
        body, kind, index = self._encode(endpoint, data)
        response = self.send("POST", f"/v1/endpoints/{endpoint}/invocations", json=body)
        return self._decode(endpoint, response.json(), kind, index)

    def invoke_raw(self, endpoint: str, body: bytes | str) -> httpx.Response:
        """Send a request body as given; the response (raises for 4xx/5xx)."""
        return self.send(
            "POST",
            f"/v1/endpoints/{endpoint}/invocations",
            content=body,
            headers={"content-type": "application/json"},
        )

    def submit(
        self,
        endpoint: str,
        data: Any,
        *,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncJob:
        """Queue an async request; ``wait`` returns its answer."""
        body, kind, index = self._encode(endpoint, data)
        headers = {}
        if callback_url:
            headers["x-callback-url"] = callback_url
        if idempotency_key:
            headers["idempotency-key"] = idempotency_key
        job = self.send(
            "POST", f"/v1/endpoints/{endpoint}/async", json=body, headers=headers
        ).json()
        return AsyncJob(job["job_id"], endpoint, kind, index)

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/v1/jobs/{job_id}")
        return result

    def wait(self, job: AsyncJob | str, timeout_s: float | None = None, poll_s: float = 0.1) -> Any:
        """Poll a job until it ends; its answer, or ``JobFailed`` with the job's error."""
        job_id = job.job_id if isinstance(job, AsyncJob) else job
        status = self._poll(
            lambda: self.job(job_id), lambda s: s["status"] in JOB_DONE, timeout_s, poll_s, job_id
        )
        if status["status"] != "succeeded":
            raise JobFailed(
                f"job {job_id} is {status['status']}: {status.get('error') or 'no error given'}",
                job_id=job_id,
            )
        if "result" not in status:
            raise JobFailed(
                f"job {job_id}'s result is too large to send inline; read it from "
                f"{status.get('result_uri')}",
                job_id=job_id,
            )
        if not isinstance(job, AsyncJob):
            return status["result"]
        return self._decode(job.endpoint, status["result"], job.kind, job.index)

    def invoke_async(self, endpoint: str, data: Any, timeout_s: float | None = None) -> Any:
        """Submit an async request and wait for its answer."""
        return self.wait(self.submit(endpoint, data), timeout_s)

    # batch
    def batch_run(
        self,
        model: str,
        input: str | Path,
        output: str | Path,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Start a batch transform (``options``: format, id_column, shard_rows, ...).

        With ``wait`` it returns the finished run and raises ``JobFailed`` if it failed.
        """
        name, ref = parse_model_ref(model)
        body = {
            "model": name,
            "ref": ref,
            "input_uri": str(input),
            "output_uri": str(output),
            **options,
        }
        run: dict[str, Any] = self.post(
            "/api/batch", json={k: v for k, v in body.items() if v is not None}
        )
        return self.batch_wait(run["run_id"], timeout_s) if wait else run

    def batch_status(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/api/batch/{run_id}")
        return result

    def batch_wait(
        self, run_id: str, timeout_s: float | None = None, poll_s: float = 0.25
    ) -> dict[str, Any]:
        run = self._poll(
            lambda: self.batch_status(run_id),
            lambda r: r["state"] != BATCH_RUNNING,
            timeout_s,
            poll_s,
            f"batch run {run_id}",
        )
        if run["state"] != "done":
            reasons = "; ".join(run.get("errors") or [run.get("error") or "no error given"])
            raise JobFailed(f"batch run {run_id} is {run['state']}: {reasons}", run_id=run_id)
        return run

    def batch_runs(self) -> Iterator[dict[str, Any]]:
        yield from self.get("/api/batch")

    # helpers
    def _poll(
        self, fetch: Any, done: Any, timeout_s: float | None, poll_s: float, what: str
    ) -> dict[str, Any]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            current: dict[str, Any] = fetch()
            if done(current):
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise RequestTimeout(
                    f"{what} did not finish within {timeout_s:g} s; it keeps running on the "
                    "server, wait for it again later"
                )
            time.sleep(poll_s)

    def metadata(self, endpoint: str) -> dict[str, Any]:
        """The endpoint's inputs and outputs (Open Inference Protocol metadata), cached."""
        if endpoint not in self._metadata:
            self._metadata[endpoint] = self.get(f"/v2/models/{endpoint}")
        return self._metadata[endpoint]

    def _encode(self, endpoint: str, data: Any) -> tuple[dict[str, Any], str, Any]:
        from zeroserve import clientcodec

        if clientcodec.is_dataframe(data):
            return {"inputs": clientcodec.frame_columns(data)}, "frame", data.index
        if isinstance(data, np.ndarray):
            inputs = self.metadata(endpoint)["inputs"]
            if len(inputs) != 1:
                names = ", ".join(i["name"] for i in inputs)
                raise BadRequest(
                    f"endpoint {endpoint} takes several inputs ({names}); pass a dict of arrays"
                )
            return {"inputs": {inputs[0]["name"]: data.tolist()}}, "arrays", None
        if isinstance(data, dict):
            columns = {k: np.asarray(v).tolist() for k, v in data.items()}
            return {"inputs": columns}, "arrays", None
        if isinstance(data, list):
            return {"instances": data}, "json", None
        raise BadRequest(
            f"cannot send a {type(data).__name__}: give a NumPy array, a dict of arrays, "
            "a pandas DataFrame or a list of rows"
        )

    def _decode(self, endpoint: str, answer: Any, kind: str, index: Any) -> Any:
        from zeroserve import clientcodec

        if kind == "json" or not isinstance(answer, dict) or "outputs" not in answer:
            return answer
        dtypes = {
            o["name"]: OIP_TO_NUMPY.get(o["datatype"], "object")
            for o in self.metadata(endpoint).get("outputs", [])
        }
        arrays = {
            name: clientcodec.to_array(values, dtypes.get(name))
            for name, values in answer["outputs"].items()
        }
        if kind == "frame":
            return clientcodec.arrays_to_frame(arrays, index)
        return arrays


def _existing_file(path: str | Path, what: str) -> Path:
    file = Path(path)
    if not file.exists():
        raise BadRequest(f"{what} {file} does not exist; check the path")
    if not file.is_file():
        raise BadRequest(f"{what} {file} is not a file")
    return file


def _signature_text(signature: str | Path | dict[str, Any]) -> str:
    import json

    if isinstance(signature, dict):
        return json.dumps(signature)
    text = _existing_file(signature, "signature file").read_text()
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"signature file {signature} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            'write {"inputs": [...], "outputs": [...]}'
        ) from None
    return text
