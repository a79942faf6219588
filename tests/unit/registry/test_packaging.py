"""Registration-side packaging: flavors, signatures, trust, ONNX compilation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zeroserve.errors import InvalidArtifact, UntrustedArtifact
from zeroserve.registry.packaging import PackageRequest, package
from zeroserve.runtimes import create_runtime
from zeroserve.runtimes.base import REFERENCE_FILE, ArtifactMeta


def pack(models_dir: Path, tmp_path: Path, name: str, **kwargs: object) -> tuple[Path, object]:
    dest = tmp_path / f"out-{name}-{len(list(tmp_path.iterdir()))}"
    result = package(PackageRequest(source=models_dir / name, dest=dest, **kwargs))  # type: ignore[arg-type]
    return dest, result


def test_skops_forest_needs_no_trust_and_keeps_a_reference_sample(
    models_dir: Path, tmp_path: Path
) -> None:
    dest, result = pack(models_dir, tmp_path, "forest.skops", sample=models_dir / "sample.npy")
    sig = result.signature  # type: ignore[attr-defined]
    assert sig.inputs[0].shape == [-1, 98]
    assert [o.name for o in sig.outputs] == ["label", "probabilities"]
    assert np.load(dest / REFERENCE_FILE).shape == (500, 98)
    assert ArtifactMeta.read(dest).format == "skops"


def test_pickles_need_trust(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UntrustedArtifact, match="--trust"):
        pack(models_dir, tmp_path, "forest.joblib")
    _, result = pack(models_dir, tmp_path, "forest.joblib", trusted=True)
    assert result.flavor == "sklearn"  # type: ignore[attr-defined]
    with pytest.raises(UntrustedArtifact, match="--trust"):
        pack(models_dir, tmp_path, "echo.py", sample=models_dir / "sample.npy")


def test_compile_onnx_matches_the_original(models_dir: Path, tmp_path: Path) -> None:
    import skops.io as sio

    dest, result = pack(
        models_dir, tmp_path, "forest.skops", compile="onnx", sample=models_dir / "sample.npy"
    )
    assert result.flavor == "onnx"  # type: ignore[attr-defined]
    metrics = result.metrics  # type: ignore[attr-defined]
    assert metrics["labels_equal"] and metrics["max_abs_diff"] <= 1e-5
    assert (dest / "source" / "model.skops").exists()
    meta = ArtifactMeta.read(dest)
    runtime = create_runtime(meta)
    runtime.load(dest)
    x = np.load(models_dir / "sample.npy")[:50]
    forest = sio.load(
        models_dir / "forest.skops",
        trusted=sio.get_untrusted_types(file=models_dir / "forest.skops"),
    )
    got = runtime.predict({"input": x})
    np.testing.assert_allclose(got["probabilities"], forest.predict_proba(x), atol=1e-5)
    np.testing.assert_array_equal(got["label"], forest.predict(x))


def test_compile_refuses_when_outputs_differ(models_dir: Path, tmp_path: Path) -> None:
    # float32 ONNX sums differ from scikit-learn's float64 by ~1e-7: a zero tolerance refuses.
    with pytest.raises(InvalidArtifact, match="does not reproduce the model"):
        pack(models_dir, tmp_path, "forest.skops", compile="onnx", tolerance=0.0)


def test_flavor_detection_and_errors(models_dir: Path, tmp_path: Path) -> None:
    _, xgb = pack(models_dir, tmp_path, "xgb.ubj")
    assert xgb.flavor == "xgboost"  # type: ignore[attr-defined]
    _, lgb = pack(models_dir, tmp_path, "lgb.txt", flavor="lightgbm")
    assert lgb.signature.inputs[0].shape == [-1, 98]  # type: ignore[attr-defined]
    with pytest.raises(InvalidArtifact, match="pass --flavor"):
        pack(models_dir, tmp_path, "lgb.txt")
    with pytest.raises(InvalidArtifact, match="looks like a sklearn artifact"):
        pack(models_dir, tmp_path, "forest.skops", flavor="onnx")
    with pytest.raises(InvalidArtifact, match="applies to scikit-learn"):
        pack(models_dir, tmp_path, "xgb.ubj", compile="onnx")
