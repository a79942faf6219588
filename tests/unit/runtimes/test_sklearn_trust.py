"""C1: a .skops file that names a code-running callable is refused without --trust."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.runtimes.skops_payloads import SCRIPT_RUNNER, exec_payload
from zeroserve.errors import UntrustedArtifact
from zeroserve.runtimes.sklearn_trust import REVIEWED_TYPES, load_skops, untrusted_types

pytest.importorskip("skops")


def test_exec_payload_is_refused_without_trust_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = exec_payload(tmp_path / "evil.skops", f"open({str(marker)!r}, 'w').write('x')")
    assert untrusted_types(payload) == ["numpy.testing._private.utils.runstring"]
    with pytest.raises(UntrustedArtifact) as info:
        load_skops(payload, trusted=False)
    assert "numpy.testing._private.utils.runstring" in info.value.message
    assert "--trust" in info.value.message
    assert info.value.details["untrusted_types"] == ["numpy.testing._private.utils.runstring"]
    assert not marker.exists()


def test_the_script_runner_payload_is_refused_too(tmp_path: Path) -> None:
    payload = exec_payload(tmp_path / "evil2.skops", "print(1)", SCRIPT_RUNNER)
    with pytest.raises(UntrustedArtifact, match="assert_run_python_script_without_output"):
        load_skops(payload, trusted=False)


def test_trust_is_what_lets_the_payload_run(tmp_path: Path) -> None:
    # Proves the payload is real: with --trust the code does run.
    marker = tmp_path / "ran"
    payload = exec_payload(tmp_path / "evil.skops", f"open({str(marker)!r}, 'w').write('x')")
    load_skops(payload, trusted=True)
    assert marker.read_text() == "x"


def test_common_estimators_load_without_trust(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    x = np.random.default_rng(1).standard_normal((60, 4))
    y = (x[:, 0] > 0).astype(int)
    for model in (
        RandomForestClassifier(n_estimators=3, random_state=0),
        HistGradientBoostingClassifier(max_iter=3),
        KNeighborsClassifier(algorithm="ball_tree"),
    ):
        model.fit(x, y)
        path = tmp_path / f"{type(model).__name__}.skops"
        sio.dump(model, path)
        loaded = load_skops(path, trusted=False)
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_reviewed_list_holds_exact_names_not_prefixes() -> None:
    assert all(name.count(".") >= 1 and not name.endswith(".") for name in REVIEWED_TYPES)
    assert "numpy.testing._private.utils.runstring" not in REVIEWED_TYPES
    assert not any(
        n.startswith(("numpy.testing", "sklearn.utils._testing")) for n in REVIEWED_TYPES
    )
