"""The cost report from traffic the real server metered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.conftest import Api
from tests.polling import wait_for
from zeroserve.process import ServerProcess


def test_cost_report_uses_metered_traffic(tmp_path: Path, models_dir: Path) -> None:
    env = {"ZEROSERVE_METER_FLUSH_INTERVAL_S": "0.5"}
    with ServerProcess(tmp_path / "state", env=env) as server:
        api = Api(server.url)
        assert api.http.get("/api/cost/report", params={"window": "1h"}).status_code == 404
        api.register("forest", models_dir / "forest.skops", compile="onnx")
        api.deploy("forest", mode="serverless", idle_timeout_s=60)
        for _ in range(40):
            assert api.invoke("forest", {"instances": [[0.3] * 98] * 5}).status_code == 200

        def flushed() -> list[Any] | None:
            # The meter flushes every 0.5 s; the report appears with the first flush. Peak
            # concurrency is sampled on the controller's tick, so it can land a flush later.
            params = {"endpoint": "forest", "window": "1h"}
            response = api.http.get("/api/cost/report", params=params)
            if response.status_code != 200:
                return None
            reports: list[Any] = response.json()
            usage = reports[0]["usage"] if reports else {}
            complete = usage.get("requests") == 40 and usage.get("peak_concurrency", 0) > 0
            return reports if complete else None

        reports = wait_for(flushed, 30, "the meter to flush all 40 requests and the peak")
    [report] = reports
    usage = report["usage"]
    assert usage["requests"] == 40
    assert usage["rows"] == 200
    assert usage["cold_starts"] == 1  # serverless: the first request started the replica
    assert usage["peak_concurrency"] == 1  # one request at a time
    assert usage["compute_s"] > 0
    assert usage["bytes_in"] == 40 * 5 * 98 * 4  # float32 inputs
    targets = report["advice"]["targets"]
    assert any(t["feasible"] and t["monthly_usd"] > 0 for t in targets)
    assert report["advice"]["recommendation"]
