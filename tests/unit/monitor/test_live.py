import numpy as np

from zeroserve.monitor.live import LiveWindows
from zeroserve.monitor.profile import build_profile
from zeroserve.types import Signature, TensorSpec

SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float64", shape=[-1, 2])],
    outputs=[TensorSpec(name="prediction", dtype="float64", shape=[-1])],
)


def test_live_window_folds_pending_requests_and_rolls() -> None:
    rng = np.random.default_rng(1)
    now = [0.0]
    live = LiveWindows(window_s=10, clock=lambda: now[0])
    live.watch("e", "v1", build_profile(SIG, {"input": rng.normal(size=(5000, 2))}), SIG)
    for _ in range(500):
        x = rng.normal(size=(1, 2))
        x[:, 1] += 1.0
        live.observe("e", "v1", {"input": x}, {"prediction": x[:, 0]})
    live.observe("other", "v1", {"input": np.zeros((1, 2))}, None)  # not watched: ignored
    live.fold()
    window = live.window("e", "v1")
    assert window is not None and window.rows == 500
    assert [r.feature for r in live.drift("e", "v1") if r.drifted] == ["input_1"]
    now[0] = 11.0
    live.fold()  # rolls: the full window becomes the previous one, still counted
    assert live.window("e", "v1").rows == 500  # type: ignore[union-attr]
    now[0] = 22.0
    live.fold()
    assert live.window("e", "v1").rows == 0  # type: ignore[union-attr]
