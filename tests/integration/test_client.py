"""zeroserve.Client against a real server: round trips equal the model's own answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests import modelkit
from zeroserve import Client, errors
from zeroserve.process import ServerProcess

COLUMNS = [f"f{i}" for i in range(8)]


@pytest.fixture(scope="module")
def frame_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, pd.DataFrame]:
    """A forest trained on a DataFrame, so its signature knows the column names."""
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    x, y = modelkit.data(rows=400, features=len(COLUMNS))
    frame = pd.DataFrame(x, columns=COLUMNS)
    model = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0).fit(frame, y)
    path = tmp_path_factory.mktemp("client") / "frame-forest.skops"
    sio.dump(model, path)
    return path, model, frame


@pytest.fixture(scope="module")
def zs(server: ServerProcess, frame_model: tuple[Path, object, pd.DataFrame]) -> Client:
    client = Client(server.url)
    path, _, _ = frame_model
    info = client.register("client-forest", path)
    assert info["version"] == 1
    deployed = client.deploy("client-forest", endpoint="client-ep")
    assert deployed["spec"]["variants"][0]["version"] == 1
    return client


def test_numpy_round_trip_equals_in_process(
    zs: Client, frame_model: tuple[Path, object, pd.DataFrame]
) -> None:
    _, model, frame = frame_model
    x = frame.to_numpy()[:50]
    out = zs.invoke("client-ep", x)
    assert set(out) == {"label", "probabilities"}
    assert isinstance(out["label"], np.ndarray)
    np.testing.assert_array_equal(out["label"], model.predict(frame[:50]))  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        out["probabilities"],
        model.predict_proba(frame[:50]),  # type: ignore[attr-defined]
        rtol=1e-6,
    )


def test_dataframe_round_trip_matches_columns_by_name(
    zs: Client, frame_model: tuple[Path, object, pd.DataFrame]
) -> None:
    _, model, frame = frame_model
    rows = frame[:40]
    shuffled = rows[list(reversed(COLUMNS))].set_index(pd.Index(range(100, 140)))
    out = zs.invoke("client-ep", shuffled)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == list(range(100, 140))
    assert out["label"].tolist() == model.predict(rows).tolist()  # type: ignore[attr-defined]
    proba = model.predict_proba(rows)  # type: ignore[attr-defined]
    np.testing.assert_allclose(out[["probabilities_0", "probabilities_1"]], proba, rtol=1e-6)


def test_async_submit_and_wait(zs: Client, frame_model: tuple[Path, object, pd.DataFrame]) -> None:
    _, model, frame = frame_model
    job = zs.submit("client-ep", frame[:5])
    out = zs.wait(job, timeout_s=60)
    assert out["label"].tolist() == model.predict(frame[:5]).tolist()  # type: ignore[attr-defined]
    again = zs.invoke_async("client-ep", frame.to_numpy()[:3], timeout_s=60)
    assert again["label"].tolist() == model.predict(frame[:3]).tolist()  # type: ignore[attr-defined]


def test_batch_run(
    zs: Client, frame_model: tuple[Path, object, pd.DataFrame], tmp_path: Path
) -> None:
    _, _, frame = frame_model
    source = tmp_path / "rows.csv"
    frame[:120].to_csv(source, index=False)
    run = zs.batch_run("client-forest:1", source, tmp_path / "out", shard_rows=50, timeout_s=120)
    assert run["state"] == "done" and run["rows_written"] == 120 and run["shards"] == 3


def test_errors_are_the_packages_exceptions_with_the_servers_message(zs: Client) -> None:
    with pytest.raises(errors.EndpointNotFound, match="no endpoint named 'nope'") as missing:
        zs.invoke("nope", [[0.0] * len(COLUMNS)])
    assert missing.value.status_code == 404
    with pytest.raises(errors.InvalidInput, match="8 values per row"):
        zs.invoke("client-ep", np.zeros((2, 3)))
    with pytest.raises(errors.InvalidInput, match="missing columns: f7"):
        zs.invoke("client-ep", pd.DataFrame({c: [0.0] for c in COLUMNS[:-1]}))
    with pytest.raises(errors.ModelNotFound, match="no model named 'ghost'"):
        zs.model("ghost")
    with pytest.raises(errors.Conflict, match=r"is served by endpoints .*client-ep"):
        zs.delete_model("client-forest")
