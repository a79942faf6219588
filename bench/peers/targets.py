"""Benchmark targets: one small class per server under test.

A target knows how to start its server, which request carries one row in its own
protocol, and where the prediction sits in its answer. `serve.py` does the rest.
To add one: subclass `Target`, set `name`, `flavor` and `health_path`, implement
`command`, `invocation_path`, `request` and `prediction`, and list it in `TARGETS`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import httpx

from peers.process import ServerProcess, TargetError, ensure_venv, free_port, pip_freeze

PEERS_DIR = Path(__file__).resolve().parent
# Pinned to what was measured. scikit-learn is the version that wrote the artifact (this venv's),
# since a pickled forest is only guaranteed to load into the version that pickled it.
SKLEARN = f"scikit-learn=={metadata.version('scikit-learn')}"
BENTOML_REQUIREMENTS = ["bentoml==1.4.39", SKLEARN, "joblib"]
# uvloop 0.22+ raises in asyncio.get_event_loop() without a running loop, which MLServer 1.7's
# inference-pool workers call at start ("There is no current event loop"): they die at once.
MLSERVER_REQUIREMENTS = [
    "mlserver==1.7.1", "mlserver-sklearn==1.7.1", SKLEARN, "uvloop==0.21.0",
]  # fmt: skip
# The best of the peers (any of their variants) is what the scikit-learn goal is measured against.
PEER_NAMES: tuple[str, ...] = ("bentoml", "bentoml-batching", "mlserver", "mlserver-batching")
# MLServer's adaptive batching bounds for the "-batching" variant.
MLSERVER_MAX_BATCH_SIZE = 32
MLSERVER_MAX_BATCH_TIME_S = 0.002


@dataclass(frozen=True)
class Artifacts:
    """What every target serves: one forest, as joblib and as ONNX, and one request row."""

    cache_dir: Path
    model_joblib: Path
    model_onnx: Path
    row: list[float]
    expected: float  # the in-process scikit-learn prediction for `row`

    @property
    def venvs_dir(self) -> Path:
        return self.cache_dir / "venvs"


class Target:
    """A server under test. Safe defaults; subclasses fill in the protocol."""

    name: ClassVar[str] = ""
    flavor: ClassVar[str] = "sklearn"  # which artifact it serves: "sklearn" or "onnx"
    baseline: ClassVar[tuple[str, ...]] = ()  # ratio denominator: the best of these targets
    goal_ratio: ClassVar[float | None] = None  # the goal for that ratio at concurrency 32
    health_path: ClassVar[str] = "/"
    startup_timeout_s: ClassVar[float] = 180.0

    def __init__(self, artifacts: Artifacts) -> None:
        self.artifacts = artifacts
        self.port = free_port()
        self.process: ServerProcess | None = None
        self.python = Path(sys.executable)

    # -- what a subclass fills in ------------------------------------------------------------

    def prepare(self) -> None:
        """One-time setup before the first start (venv, model store). Raise TargetError."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def cwd(self) -> Path:
        return PEERS_DIR

    def invocation_path(self) -> str:
        raise NotImplementedError

    def request(self) -> dict[str, Any]:
        """The JSON body that asks for one prediction of the fixed row."""
        return {"instances": [self.artifacts.row]}

    def prediction(self, payload: Any) -> float:
        """The predicted label for the row in this target's response JSON."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Runs once the health check passes (register and deploy, for a platform)."""

    def versions(self) -> list[str]:
        """`name==version` of what this target runs, for the results."""
        return pip_freeze(self.python)

    # -- shared mechanics --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.invocation_path()}"

    @property
    def body(self) -> bytes:
        return json.dumps(self.request()).encode()

    @property
    def pid(self) -> int:
        assert self.process is not None, "start() first"
        return self.process.pid

    def start(self, log_path: Path) -> None:
        self.port = free_port()
        self.process = ServerProcess(self.command(), self.cwd(), self.env(), log_path)
        self.wait_healthy()
        self.after_start()

    def wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if not self.process.alive():
                    raise TargetError(
                        f"{self.name} exited while starting:\n{self.process.log_tail()}"
                    )
                try:
                    if self.ready(client):
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise TargetError(
            f"{self.name} not healthy after {self.startup_timeout_s:.0f} s:\n"
            f"{self.process.log_tail()}"
        )

    def ready(self, client: httpx.Client) -> bool:
        response = client.get(f"http://127.0.0.1:{self.port}{self.health_path}")
        return response.is_success

    def extra_ok(self, response: httpx.Response) -> bool:
        """The response is a success and carries the in-process model's prediction for the row."""
        if not response.is_success:
            return False
        try:
            return float(self.prediction(response.json())) == self.artifacts.expected
        except (ValueError, KeyError, IndexError, TypeError):
            return False

    def check_prediction(self, timeout_s: float = 60.0) -> None:
        """POST the row until the answer is right (a deploy may still be loading) or time is up."""
        deadline = time.monotonic() + timeout_s
        headers = {"Content-Type": "application/json"}
        with httpx.Client(timeout=30.0) as client:
            while True:
                response = client.post(self.url, content=self.body, headers=headers)
                if self.extra_ok(response):
                    return
                if time.monotonic() > deadline:
                    raise TargetError(
                        f"{self.name}: wrong or missing prediction (expected "
                        f"{self.artifacts.expected}): HTTP {response.status_code} "
                        f"{response.text[:300]}"
                    )
                time.sleep(1.0)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


# -- hand-written Starlette + uvicorn app -----------------------------------------------------


class HandwrittenTarget(Target):
    """bench/peers/handwritten_app.py: ONNX Runtime in-process, uvicorn with two workers."""

    name = "handwritten"
    flavor = "onnx"
    health_path = "/health"
    workers: ClassVar[int] = 2

    def command(self) -> list[str]:
        return [
            str(self.python), "-m", "uvicorn", "handwritten_app:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        model = self.artifacts.model_onnx if self.flavor == "onnx" else self.artifacts.model_joblib
        return {"BENCH_MODEL_PATH": str(model), "BENCH_FLAVOR": self.flavor}

    def invocation_path(self) -> str:
        return "/predict"

    def prediction(self, payload: Any) -> float:
        return float(payload["predictions"][0])

    def versions(self) -> list[str]:
        names = ["starlette", "uvicorn", "uvloop", "httptools", "onnxruntime", "scikit-learn"]
        return [f"{name}=={metadata.version(name)}" for name in [*names, "numpy", "joblib"]]


class HandwrittenSklearnTarget(HandwrittenTarget):
    """The same app serving the joblib scikit-learn model (for reference)."""

    name = "handwritten-sklearn"
    flavor = "sklearn"
    baseline = PEER_NAMES


# -- BentoML ----------------------------------------------------------------------------------


class BentoMLTarget(Target):
    """`bentoml serve` of bench/peers/bentoml_service.py with its default workers."""

    name = "bentoml"
    health_path = "/readyz"
    batching: ClassVar[bool] = False

    def home(self) -> Path:
        return self.artifacts.cache_dir / "bentoml-home"

    def prepare(self) -> None:
        self.python = ensure_venv(self.artifacts.venvs_dir, "bentoml", BENTOML_REQUIREMENTS)
        digest = hashlib.sha256(self.artifacts.model_joblib.read_bytes()).hexdigest()
        stamp = self.home() / "imported-model.sha256"
        if stamp.exists() and stamp.read_text() == digest:
            return
        shutil.rmtree(self.home(), ignore_errors=True)
        self.home().mkdir(parents=True)
        result = subprocess.run(
            [str(self.python), "bentoml_service.py", "import", str(self.artifacts.model_joblib)],
            cwd=PEERS_DIR, env=self.full_env(), capture_output=True, text=True, timeout=300,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise TargetError(f"bentoml model import failed:\n{result.stderr[-1500:]}")
        stamp.write_text(digest)

    def env(self) -> dict[str, str]:
        return {
            "BENTOML_HOME": str(self.home()),
            "BENTOML_DO_NOT_TRACK": "True",
            "BENCH_BATCHING": "1" if self.batching else "0",
        }

    def full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    def command(self) -> list[str]:
        bentoml = str(self.python.parent / "bentoml")
        return [bentoml, "serve", "bentoml_service:Forest", "--host", "127.0.0.1",
                "--port", str(self.port)]  # fmt: skip

    def invocation_path(self) -> str:
        return "/predict"

    def prediction(self, payload: Any) -> float:
        return float(payload[0])


class BentoMLBatchingTarget(BentoMLTarget):
    name = "bentoml-batching"
    batching = True


# -- MLServer ---------------------------------------------------------------------------------


class MLServerTarget(Target):
    """`mlserver start` with mlserver_sklearn.SKLearnModel over the joblib file, V2 protocol."""

    name = "mlserver"
    health_path = "/v2/models/forest/ready"
    batching: ClassVar[bool] = False

    def prepare(self) -> None:
        self.python = ensure_venv(self.artifacts.venvs_dir, "mlserver", MLSERVER_REQUIREMENTS)

    def model_dir(self) -> Path:
        return self.artifacts.cache_dir / "mlserver" / self.name

    def write_settings(self) -> None:
        """settings.json (ports, loopback) and model-settings.json; MLServer defaults otherwise."""
        model_dir = self.model_dir()
        model_dir.mkdir(parents=True, exist_ok=True)
        settings = {
            "host": "127.0.0.1",
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
        }
        model: dict[str, Any] = {
            "name": "forest",
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(self.artifacts.model_joblib)},
        }
        if self.batching:
            model["max_batch_size"] = MLSERVER_MAX_BATCH_SIZE
            model["max_batch_time"] = MLSERVER_MAX_BATCH_TIME_S
        (model_dir / "settings.json").write_text(json.dumps(settings, indent=2))
        (model_dir / "model-settings.json").write_text(json.dumps(model, indent=2))

    def command(self) -> list[str]:
        self.write_settings()
        return [str(self.python.parent / "mlserver"), "start", str(self.model_dir())]

    def invocation_path(self) -> str:
        return "/v2/models/forest/infer"

    def request(self) -> dict[str, Any]:
        row = self.artifacts.row
        return {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP32",
                            "data": row}]}  # fmt: skip

    def prediction(self, payload: Any) -> float:
        return float(payload["outputs"][0]["data"][0])


class MLServerBatchingTarget(MLServerTarget):
    name = "mlserver-batching"
    batching = True


# -- zeroserve ----------------------------------------------------------------------------------

# The CLI calls after `zeroserve up` (they reach the server through ZEROSERVE_URL).
ZEROSERVE_REGISTER = ["models", "register", "{model}", "--name", "{name}", "--flavor", "sklearn",
                      "--trust"]  # fmt: skip
ZEROSERVE_DEPLOY = ["deploy", "{name}"]  # returns once the endpoint is ready
LABEL_KEYS = ("label", "output_label", "predict", "prediction")


class ZeroserveTarget(Target):
    """`zeroserve up`, then register and deploy the joblib model; skipped if the CLI is missing."""

    name = "zeroserve"
    baseline = PEER_NAMES
    goal_ratio = 5.0
    health_path = "/healthz"
    endpoint: ClassVar[str] = "fraud"
    register_extra: ClassVar[tuple[str, ...]] = ()
    processes: ClassVar[int] = 2  # gateway processes, as the hand-written app runs two workers

    def cli(self) -> str:
        beside = self.python.parent / "zeroserve"
        return str(beside) if beside.exists() else (shutil.which("zeroserve") or "zeroserve")

    def data_dir(self) -> Path:
        return self.artifacts.cache_dir / "zeroserve" / self.name

    def prepare(self) -> None:
        try:
            result = subprocess.run([self.cli(), "--help"], capture_output=True, text=True,
                                    timeout=60, check=False)  # fmt: skip
        except FileNotFoundError as exc:
            raise TargetError("zeroserve CLI not found: pip install -e '.[demo]'") from exc
        if result.returncode != 0 or " up " not in f" {result.stdout} ":
            raise TargetError(
                "zeroserve CLI is not ready (no working `zeroserve up`): "
                f"{(result.stderr or result.stdout)[-500:]}"
            )

    def command(self) -> list[str]:
        shutil.rmtree(self.data_dir(), ignore_errors=True)
        self.data_dir().mkdir(parents=True)
        return [self.cli(), "up", "--port", str(self.port), "--data-dir", str(self.data_dir()),
                "--processes", str(self.processes)]  # fmt: skip

    def after_start(self) -> None:
        env = {**os.environ, **self.env(), "ZEROSERVE_URL": f"http://127.0.0.1:{self.port}"}
        for args in (ZEROSERVE_REGISTER + list(self.register_extra), ZEROSERVE_DEPLOY):
            filled = [arg.format(model=self.artifacts.model_joblib, name=self.endpoint)
                      for arg in args]  # fmt: skip
            result = subprocess.run([self.cli(), *filled], env=env, capture_output=True,
                                    text=True, timeout=300, check=False)  # fmt: skip
            if result.returncode != 0:
                raise TargetError(
                    f"zeroserve {' '.join(filled)} failed:\n{result.stderr}{result.stdout}"
                )

    def invocation_path(self) -> str:
        return f"/v1/endpoints/{self.endpoint}/invocations"

    def prediction(self, payload: Any) -> float:
        first = payload["predictions"][0]  # a label, or {output name: value} for several outputs
        if isinstance(first, dict):
            first = next((first[k] for k in LABEL_KEYS if k in first), next(iter(first.values())))
        return float(first)

    def versions(self) -> list[str]:
        names = ["zeroserve", "starlette", "uvicorn", "onnxruntime", "scikit-learn", "numpy"]
        return [f"{name}=={metadata.version(name)}" for name in names]


class ZeroserveOnnxTarget(ZeroserveTarget):
    name = "zeroserve-onnx"
    flavor = "onnx"
    baseline = ("handwritten",)
    goal_ratio = 0.9
    register_extra = ("--compile", "onnx")


class ZeroserveOnnxOneProcessTarget(ZeroserveOnnxTarget):
    """The same with one gateway process: shows what the secondary gateway adds."""

    name = "zeroserve-onnx-1proc"
    goal_ratio = None
    processes = 1


class _FromBaselineSource:
    """Runs zeroserve from another checkout's ``src`` (``ZEROSERVE_BASELINE_SRC``): the
    commit before a change, measured in the same run as the change itself."""

    def prepare(self) -> None:
        src = os.environ.get("ZEROSERVE_BASELINE_SRC")
        if not src or not (Path(src) / "zeroserve").is_dir():
            raise TargetError(
                "set ZEROSERVE_BASELINE_SRC to the src/ of a checkout of the baseline commit "
                "(git worktree add /tmp/base COMMIT; ZEROSERVE_BASELINE_SRC=/tmp/base/src)"
            )

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": os.environ["ZEROSERVE_BASELINE_SRC"]}


class ZeroserveBaselineTarget(_FromBaselineSource, ZeroserveTarget):
    name = "zeroserve-base"
    baseline = ()
    goal_ratio = None


class ZeroserveOnnxBaselineTarget(_FromBaselineSource, ZeroserveOnnxTarget):
    name = "zeroserve-onnx-base"
    baseline = ()
    goal_ratio = None


TARGETS: dict[str, type[Target]] = {
    cls.name: cls
    for cls in (
        ZeroserveTarget,
        ZeroserveOnnxTarget,
        ZeroserveOnnxOneProcessTarget,
        ZeroserveBaselineTarget,
        ZeroserveOnnxBaselineTarget,
        BentoMLTarget,
        BentoMLBatchingTarget,
        MLServerTarget,
        MLServerBatchingTarget,
        HandwrittenTarget,
        HandwrittenSklearnTarget,
    )
}
