import io

import numpy as np
import pytest

from zeroserve.errors import BadRequest
from zeroserve.monitor.evaluate import Requirement, check_evaluation_set, gate


def test_gate_needs_every_margin_and_knows_which_way_is_better() -> None:
    reqs = [Requirement.parse("accuracy:0.01"), Requirement.parse("log_loss:0.02")]
    ok, reasons = gate(
        {"accuracy": 0.92, "log_loss": 0.20}, {"accuracy": 0.90, "log_loss": 0.25}, reqs
    )
    assert ok and all("pass" in r for r in reasons)
    ok, reasons = gate(
        {"accuracy": 0.905, "log_loss": 0.20}, {"accuracy": 0.90, "log_loss": 0.25}, reqs
    )
    assert not ok and "FAIL" in reasons[0] and "pass" in reasons[1]
    ok, reasons = gate({"rmse": 1.0}, None, [Requirement.parse("rmse:0.1")])
    assert ok and "nothing to beat" in reasons[0]
    ok, _ = gate({"rmse": 1.0}, {"rmse": 1.2}, [Requirement.parse("rmse:0.1")])
    assert ok  # lower RMSE is better


def test_bad_requirements_and_sets_are_400s() -> None:
    with pytest.raises(BadRequest, match="one of"):
        Requirement.parse("speed:1")
    with pytest.raises(BadRequest, match="METRIC:MARGIN"):
        Requirement.parse("accuracy:lots")
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(BadRequest, match="one outcome per row"):
        check_evaluation_set(buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((3, 2)), y=np.zeros(3))
    assert check_evaluation_set(buf.getvalue()) == 3
