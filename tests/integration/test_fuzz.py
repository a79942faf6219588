"""Bounded schemathesis passes over a real server with a deployed model: the control
API's own OpenAPI document, and the Open Inference Protocol REST spec published by the
KServe project. Any 5xx fails the test, with every failing request listed."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.integration.conftest import Api
from zeroserve.process import ServerProcess

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SPEC_NAME = "open_inference_rest.yaml"
HEADERS = {"x-zeroserve-client": "fuzz"}
EXAMPLES = int(os.environ.get("ZEROSERVE_FUZZ_EXAMPLES", "6"))
"""Examples per operation and generation mode (the control API has ~40 operations)."""
OIP_EXAMPLES = int(os.environ.get("ZEROSERVE_FUZZ_OIP_EXAMPLES", "100"))
SESSION = requests.Session()
OWNED_ELSEWHERE: set[str] = set()
"""Routes another suite covers; none since the cost estimate bounds its inputs."""
SLOW_PATHS = ("/api/models/{name}/versions",)
"""Each case runs the packager in a child process: fewer examples."""


def oip_spec() -> Path | None:
    candidates = [
        os.environ.get("ZEROSERVE_OIP_SPEC", ""),
        ROOT.parent / "shared" / "specs" / SPEC_NAME,
        ROOT.parent.parent / "shared" / "specs" / SPEC_NAME,  # a worktree under wt/
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def fuzz(
    schema: Any,
    base_url: str,
    examples: int,
    pins: dict[str, Any] | None = None,
) -> tuple[int, list[str]]:
    """Run every operation in both generation modes; the count of cases and the 5xx seen."""
    failures: list[str] = []
    count = [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in OWNED_ELSEWHERE:
            continue
        wanted = {
            k: v
            for k, v in (pins or {}).items()
            if any(p.name == k for p in operation.path_parameters)
        }
        n = max(2, examples // 3) if operation.path in SLOW_PATHS else examples
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=wanted)
            with contextlib.suppress(Unsatisfiable):  # nothing to make invalid: no parameters
                count[0] += fuzz_operation(strategy, n, base_url, str(mode), failures)
    return count[0], failures


def fuzz_operation(
    strategy: Any, examples: int, base_url: str, mode: str, failures: list[str]
) -> int:
    count = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        nonlocal count
        count += 1
        response = case.call(base_url=base_url, session=SESSION, headers=HEADERS, timeout=120)
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} ({mode}): "
                f"{response.status_code} {response.text[:300]}"
            )

    run()
    return count


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Api]:
    with ServerProcess(tmp_path_factory.mktemp("fuzz")) as server:
        api = Api(server.url)
        api.register("fz", models_dir / "forest.skops", models_dir / "sample.npy")
        api.deploy("fz")
        yield api


def test_control_api_openapi_has_no_server_errors(fuzzed: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/api/openapi.json")
    cases, failures = fuzz(schema, fuzzed.url, EXAMPLES)
    # Again with the deployed model's names, so reads reach real objects, not only 404s.
    reads = schema.include(method="GET")
    pinned, more = fuzz(reads, fuzzed.url, EXAMPLES, {"name": "fz", "model": "fz", "ref": "1"})
    cases += pinned
    failures += more
    assert cases >= 200, f"only {cases} cases ran"
    assert not failures, "\n".join(failures)


def test_open_inference_protocol_spec_has_no_server_errors(fuzzed: Api) -> None:
    path = oip_spec()
    if path is None:
        pytest.skip(f"{SPEC_NAME} not found under ../shared/specs (or ZEROSERVE_OIP_SPEC)")
    text = re.sub(r"\$\{(\w+)\}", r"{\1}", path.read_text())  # the spec writes ${MODEL_NAME}
    document = yaml.safe_load(text)
    document["servers"] = [{"url": fuzzed.url}]
    schema = schemathesis.openapi.from_dict(document)
    # A deployed model and version, so the cases reach the decoder, not only the 404s.
    cases, failures = fuzz(
        schema, fuzzed.url, OIP_EXAMPLES, {"MODEL_NAME": "fz", "MODEL_VERSION": "1"}
    )
    unpinned, more = fuzz(schema, fuzzed.url, OIP_EXAMPLES // 4)
    assert cases + unpinned >= 200, f"only {cases + unpinned} cases ran"
    assert not failures + more, "\n".join(failures + more)
    fuzzed.check(fuzzed.http.get("/v2/models/fz/ready"))  # the model still serves
    assert fuzzed.invoke("fz", {"instances": [[0.1] * 98]}).status_code == 200
