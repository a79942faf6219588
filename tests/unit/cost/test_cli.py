from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from zeroserve.cli.cost import app

runner = CliRunner()


def test_estimate_json_from_flags() -> None:
    result = runner.invoke(
        app,
        [
            "estimate",
            "--requests",
            "10000000",
            "--duration-s",
            "0.1",
            "--memory-mb",
            "2048",
            "--format",
            "json",
            "--today",
            "2026-12-01",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    serverless = next(t for t in data["targets"] if t["id"] == "aws.sagemaker.serverless")
    assert serverless["monthly_usd"] == 40.00
    assert not any("older than" in w for w in data["warnings"])


def test_estimate_from_profile_file_with_override(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(
        yaml.safe_dump({"name": "fraud", "requests_per_month": 1000, "duration_s": 0.1})
    )
    result = runner.invoke(
        app,
        [
            "estimate",
            "--profile",
            str(path),
            "--target",
            "aws.sagemaker.realtime:ml.m5.xlarge",
            "--hours-per-month",
            "720",
            "--price",
            "aws.sagemaker.realtime:instance_hour:ml.m5.xlarge=0.20",
        ],
    )
    assert result.exit_code == 0, result.output
    # 720 h x $0.20 = $144.00
    assert "$144.00 a month" in result.output and "720 h x $0.20/h" in result.output


def test_refused_configuration_exits_with_the_reason() -> None:
    result = runner.invoke(
        app,
        [
            "estimate",
            "--requests",
            "1000",
            "--duration-s",
            "0.1",
            "--target",
            "aws.sagemaker.realtime:ml.t3.medium",
        ],
    )
    assert result.exit_code == 1
    assert "notebook instance type" in result.output


def test_table_and_html(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["estimate", "--requests", "1e6", "--duration-s", "0.1"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "cheapest feasible" in result.output
    out = tmp_path / "r.html"
    result = runner.invoke(
        app,
        [
            "estimate",
            "--requests",
            "1e6",
            "--duration-s",
            "0.1",
            "--format",
            "html",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "<svg" in out.read_text()


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--instance-type", "aws.sagemaker.realtime=ml.x99.huge"], "instance_types"),
        (["--price", "aws.fargate=-150%"], "discount_pct"),
        (["--commitment", "aws.fargate=5yr"], "commitments.aws.fargate"),
        (["--output-tokens", "100", "--tokens-per-s", "0"], "self_host_tokens_per_s"),
        (["--cached-share", "1.5"], "cached_input_share"),
        (["--batch-share", "-0.1"], "batch_share"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(flags: list[str], field: str) -> None:
    result = runner.invoke(
        app,
        ["estimate", "--requests", "1000", "--duration-s", "0.1", *flags],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0], result.output


def test_compact_table_by_default_and_all_on_request() -> None:
    args = ["estimate", "--requests", "10000000", "--duration-s", "0.1", "--memory-mb", "2048"]
    env = {"COLUMNS": "200"}
    compact = runner.invoke(app, [*args, "--today", "2026-12-01"], env=env)
    assert compact.exit_code == 0, compact.output
    assert "--all lists them" in compact.output and "aws.bedrock.provisioned" not in compact.output
    full = runner.invoke(app, [*args, "--today", "2026-12-01", "--all"], env=env)
    assert "aws.bedrock.provisioned" in full.output and "--all lists them" not in full.output
    # No stale-price warning on today's catalog.
    assert "older than" not in compact.output
