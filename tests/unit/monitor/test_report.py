from pathlib import Path

import numpy as np
import pytest

from zeroserve.monitor.predlog import PredictionLog
from zeroserve.monitor.profile import PROFILE_FILE, Profile, build_profile, write_profile
from zeroserve.monitor.report import drift_report, render_html
from zeroserve.registry.store import ArtifactStore
from zeroserve.types import Signature, TensorSpec

pytest.importorskip("pyarrow")
SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float64", shape=[-1, 5])],
    outputs=[TensorSpec(name="prediction", dtype="float64", shape=[-1])],
)
T0 = 1_800_000_000.0


def fill(log: PredictionLog, rng: np.random.Generator, start: float, shift: float) -> None:
    times = iter([*np.linspace(start, start + 3000, 20), *([start + 3000.0] * 10)])
    log.clock = lambda: float(next(times))
    for i in range(20):
        x = rng.normal(size=(1000, 5))
        x[:, 3] += shift
        log.record(
            "e",
            "v1",
            f"r{start}-{i}",
            {"input": x},
            {"prediction": x[:, 3] * 2 + shift},
            1.0,
            signature=SIG,
        )
    log.flush()


def test_drift_report_names_the_shifted_feature_and_plots_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    store = ArtifactStore(str(tmp_path))
    log = PredictionLog(store, default_rate=1.0)
    fill(log, rng, T0 - 3600, 0.0)  # the hour before: outputs' reference
    fill(log, rng, T0, 0.5)
    profile = build_profile(SIG, {"input": rng.normal(size=(10_000, 5))})
    report = drift_report(profile, store, "e", variant="v1", since_ts=T0, until_ts=T0 + 3600)
    assert report["rows"] == 20_000
    assert report["drifted"] == ["input_3"]
    top = report["features"][0]
    assert top["feature"] == "input_3" and top["score"] == pytest.approx(0.5, abs=0.05)
    assert report["output_reference"] == "previous window"
    (score,) = [r for r in report["outputs"] if r["feature"] == "score"]
    assert score["drifted"]
    page = render_html(report)
    assert page.count("<svg") == 2  # input_3 and the score
    assert "input_3" in page


def test_profile_is_written_beside_the_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    np.save(tmp_path / "reference.npy", rng.normal(size=(500, 5)))
    assert write_profile(tmp_path, SIG)
    profile = Profile.load(tmp_path / PROFILE_FILE)
    assert profile.rows == 500
    assert sorted(profile.inputs.sketches) == [f"input_{i}" for i in range(5)]
    assert not write_profile(tmp_path / "nothing", SIG)


def test_the_profile_joins_the_artifact_digests(tmp_path: Path) -> None:
    from zeroserve.digests import verify_artifact, write_digests

    np.save(tmp_path / "reference.npy", np.random.default_rng(3).normal(size=(100, 5)))
    (tmp_path / "model.onnx").write_bytes(b"model")
    write_digests(tmp_path)
    assert write_profile(tmp_path, SIG)
    verify_artifact(tmp_path)  # would raise on an unrecorded file
