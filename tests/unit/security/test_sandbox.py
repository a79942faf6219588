"""M11 and C1's blast radius: model code inspected at registration runs in a child with a
scrubbed environment, rlimits and a private working directory."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import resource
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from zeroserve.errors import ZeroserveError
from zeroserve.registry.inspection import inspect_artifact
from zeroserve.registry.packaging import PackageRequest
from zeroserve.sandbox import Limits, run_sandboxed, scrubbed_env
from zeroserve.settings import Settings

SECRETS = {
    "ZEROSERVE_ADMIN_API_KEYS": '["admin-key-0123456789"]',
    "ZEROSERVE_API_KEYS": '["data-key-0123456789"]',
    "ZEROSERVE_DATABASE_URL": "postgresql://u:pw@db/zs",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AWS_ACCESS_KEY_ID": "AKIA123",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/gcp.json",
    "AZURE_CLIENT_SECRET": "az",
}


def test_scrubbed_env_keeps_paths_and_drops_secrets() -> None:
    environ = {**SECRETS, "PATH": "/usr/bin", "PYTHONPATH": "/src", "LC_ALL": "C.UTF-8"}
    env = scrubbed_env(environ=environ)
    assert env == {"PATH": "/usr/bin", "PYTHONPATH": "/src", "LC_ALL": "C.UTF-8"}
    passed = scrubbed_env(["AWS_ACCESS_KEY_ID"], environ=environ, overrides={"HOME": "/w"})
    assert passed["AWS_ACCESS_KEY_ID"] == "AKIA123" and passed["HOME"] == "/w"
    assert "AWS_SECRET_ACCESS_KEY" not in passed


def test_limits_and_cwd_apply_in_the_child(tmp_path: Path) -> None:
    probe = (
        "import json, os, resource as r;"
        "print(json.dumps([r.getrlimit(r.RLIMIT_AS)[0], r.getrlimit(r.RLIMIT_CPU)[0],"
        " r.getrlimit(r.RLIMIT_FSIZE)[0], os.getcwd(), os.environ.get('HOME')]))"
    )
    outcome = asyncio.run(
        run_sandboxed(
            [sys.executable, "-c", probe],
            cwd=tmp_path,
            limits=Limits(memory_mb=1024, cpu_s=30, file_mb=10),
            timeout_s=60,
        )
    )
    assert outcome.returncode == 0, outcome.stderr
    rlimit_as, cpu, fsize, cwd, home = json.loads(outcome.stdout)
    assert (rlimit_as, cpu, fsize) == (1024 * 2**20, 30, 10 * 2**20)
    assert cwd == str(tmp_path) and home == str(tmp_path)
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != 1024 * 2**20  # the parent is untouched


def test_the_file_size_limit_stops_a_big_write(tmp_path: Path) -> None:
    writer = "open('big', 'wb').write(b'x' * (3 * 2**20))"
    outcome = asyncio.run(
        run_sandboxed(
            [sys.executable, "-c", writer],
            cwd=tmp_path,
            limits=Limits(file_mb=1),
            timeout_s=60,
        )
    )
    assert outcome.returncode != 0
    assert (tmp_path / "big").stat().st_size <= 2**20


def write_spy_model(path: Path, report: Path) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""
            import json, os
            import numpy as np
            # Module-level code runs when the packager imports the model.
            with open({str(report)!r}, "w") as fh:
                json.dump({{"env": dict(os.environ), "cwd": os.getcwd()}}, fh)

            class Model:
                def load(self, artifact_dir):
                    pass

                def predict(self, inputs):
                    return {{"y": np.asarray(inputs["input"]).sum(axis=1)}}
            """
        )
    )
    return path


def test_model_code_at_registration_sees_no_keys_or_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    report = tmp_path / "report.json"
    work = tmp_path / "work"
    work.mkdir()
    sample = tmp_path / "sample.npy"
    np.save(sample, np.ones((4, 3)))
    req = PackageRequest(
        source=write_spy_model(work / "spy.py", report),
        dest=work / "artifact",
        trusted=True,
        sample=sample,
    )
    settings = Settings(data_dir=tmp_path / "data")
    asyncio.run(inspect_artifact(req, settings, work))
    seen = json.loads(report.read_text())
    assert not set(SECRETS) & set(seen["env"])
    assert seen["cwd"] == str(work)
    assert not Path(seen["cwd"]).is_relative_to(settings.data_dir.resolve())


def test_a_model_over_the_memory_limit_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    hog = work / "hog.py"
    hog.write_text("blob = bytearray(3 * 2**30)\nclass Model:\n    pass\n")
    req = PackageRequest(source=hog, dest=work / "artifact", trusted=True)
    settings = Settings(data_dir=tmp_path / "data", sandbox_memory_mb=512)
    with pytest.raises(ZeroserveError) as info:
        asyncio.run(inspect_artifact(req, settings, work))
    assert info.value.status_code == 400
    assert "ZEROSERVE_SANDBOX_MEMORY_MB" in info.value.message


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_the_child_runs_as_the_sandbox_user_when_we_are_root(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "upload").mkdir()
    outcome = asyncio.run(
        run_sandboxed(
            ["/bin/sh", "-c", "id -u; touch upload/written"],
            cwd=work,
            limits=Limits(),
            timeout_s=30,
            user="nobody",
        )
    )
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.decode().strip() == str(pwd.getpwnam("nobody").pw_uid)
    assert (work / "upload" / "written").stat().st_uid == pwd.getpwnam("nobody").pw_uid
