"""Models people actually have, trained here, served with the answers their own code gives.

Each model is registered, deployed and compared with the library's own
``predict``/``predict_proba`` on the JSON route (rows as objects and columns),
Open Inference Protocol v2, and a batch transform whose input has its columns in
another order than training.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import Api
from zeroserve.jobs import batch
from zeroserve.process import ServerProcess
from zeroserve.protocols import client as codec
from zeroserve.registry.python_dir import pack

try:
    import mlflow  # noqa: F401

    MLFLOW = True
except ImportError:
    MLFLOW = False
RNG = np.random.default_rng(7)
N = 400
CITIES = ["paris", "rome", "oslo", "lima"]


def mixed_frame(n: int = N, nulls: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "city": RNG.choice(CITIES, n),
            "income": RNG.normal(50, 15, n),
            "age": RNG.integers(18, 80, n),
            "score": RNG.normal(size=n),
        }
    )
    if nulls:
        frame.loc[RNG.random(n) < 0.15, "income"] = np.nan
        frame.loc[RNG.random(n) < 0.15, "score"] = np.nan
    return frame


def target(frame: pd.DataFrame, classes: int = 2) -> np.ndarray[Any, Any]:
    raw = (frame["city"].isin(["rome", "lima"]) * 1.0 + frame["score"].fillna(0)).to_numpy()
    if classes == 2:
        return np.where(raw > 0.6, "yes", "no")
    return np.digitize(raw, [0.0, 1.0])


@dataclass
class Case:
    name: str
    path: Path
    frame: pd.DataFrame  # the rows to send, in the training column order
    want: Callable[[pd.DataFrame], dict[str, np.ndarray[Any, Any]]]
    form: dict[str, Any] = field(default_factory=dict)
    sample: Path | None = None
    batch_frame: pd.DataFrame | None = None  # rows without NaN where the file cannot carry it
    shuffle: bool = True
    classes: list[Any] | None = None
    batch: bool = True  # batch transform takes one matrix or a table, not several tensors


def sklearn_answer(model: Any) -> Callable[[pd.DataFrame], dict[str, Any]]:
    def want(frame: pd.DataFrame) -> dict[str, Any]:
        if hasattr(model, "predict_proba"):
            return {"label": model.predict(frame), "probabilities": model.predict_proba(frame)}
        return {"prediction": model.predict(frame)}

    want.classes = np.asarray(getattr(model, "classes_", [])).tolist() or None  # type: ignore[attr-defined]
    return want


def build_cases(root: Path) -> list[Case]:
    import joblib
    import lightgbm as lgb
    import skops.io as sio
    import xgboost as xgb
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import FixedThresholdClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cases = []
    train = mixed_frame()
    test = mixed_frame(60)

    # 1. ColumnTransformer + OneHotEncoder over mixed string and numeric columns.
    pipe = make_pipeline(
        ColumnTransformer(
            [
                ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                ("num", StandardScaler(), ["income", "age", "score"]),
            ]
        ),
        LogisticRegression(),
    ).fit(train, target(train))
    sio.dump(pipe, root / "mixed.skops")
    cases.append(Case("mixed", root / "mixed.skops", test, sklearn_answer(pipe)))

    # 2. An imputing pipeline fed nulls (numeric DataFrame: a named float matrix).
    numeric = mixed_frame(nulls=True).drop(columns=["city"])
    numeric_test = mixed_frame(60, nulls=True).drop(columns=["city"])
    imputer = make_pipeline(SimpleImputer(), LogisticRegression()).fit(
        numeric, numeric["age"].to_numpy() > 50
    )
    sio.dump(imputer, root / "imputer.skops")
    cases.append(
        Case(
            "imputer",
            root / "imputer.skops",
            numeric_test,
            sklearn_answer(imputer),
        )
    )

    # 3. HistGradientBoosting with NaN.
    hgb = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(
        numeric, target(mixed_frame(nulls=True).assign(score=numeric["score"]), 3)
    )
    sio.dump(hgb, root / "hgb.skops")
    cases.append(
        Case(
            "hgb",
            root / "hgb.skops",
            numeric_test,
            sklearn_answer(hgb),
        )
    )

    # 4. A threshold-tuned classifier: predict() is not the argmax of predict_proba().
    full = numeric.fillna(0)
    tuned = FixedThresholdClassifier(LogisticRegression(), threshold=0.3).fit(
        full, full["score"] > 0.4
    )
    joblib.dump(tuned, root / "tuned.joblib")
    tuned_test = numeric_test.fillna(0)
    proba = tuned.predict_proba(tuned_test)[:, 1]
    assert ((proba > 0.3) & (proba < 0.5)).any(), "the threshold must matter for this data"
    cases.append(
        Case("tuned", root / "tuned.joblib", tuned_test, sklearn_answer(tuned), {"trust": True})
    )

    # 5. 3-class XGBoost and LightGBM classifiers, saved natively.
    y3 = target(mixed_frame(nulls=True).assign(score=numeric["score"]), 3)
    xgbc = xgb.XGBClassifier(n_estimators=15, max_depth=3, n_jobs=1).fit(numeric, y3)
    xgbc.save_model(root / "xgb3.ubj")
    cases.append(Case("xgb3", root / "xgb3.ubj", numeric_test, sklearn_answer(xgbc)))
    lgbc = lgb.LGBMClassifier(n_estimators=15, verbose=-1, n_jobs=1).fit(numeric, y3)
    lgbc.booster_.save_model(root / "lgb3.txt")
    cases.append(
        Case(
            "lgb3",
            root / "lgb3.txt",
            numeric_test,
            sklearn_answer(lgbc),
            {"flavor": "lightgbm"},
        )
    )

    # 6. skl2onnx's default export (ZipMap probabilities), one float matrix input.
    from skl2onnx import to_onnx

    x = full.to_numpy(np.float32)
    onnx_model = LogisticRegression().fit(x, y3)
    (root / "zipmap.onnx").write_bytes(to_onnx(onnx_model, x[:1]).SerializeToString())
    onnx_test = pd.DataFrame(tuned_test.to_numpy(np.float32))

    def onnx_want(frame: pd.DataFrame) -> dict[str, Any]:
        rows = frame.to_numpy(np.float32)
        return {
            "output_label": onnx_model.predict(rows),
            "output_probability": onnx_model.predict_proba(rows),
        }

    cases.append(
        Case("zipmap", root / "zipmap.onnx", onnx_test, onnx_want, shuffle=False, classes=[0, 1, 2])
    )

    # 6b. The mixed pipeline exported by skl2onnx: one named input per column, strings too.
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    per_column = [("city", StringTensorType([None, 1]))] + [
        (c, FloatTensorType([None, 1])) for c in ["income", "age", "score"]
    ]
    exported = convert_sklearn(
        pipe, initial_types=per_column, target_opset={"": 17, "ai.onnx.ml": 3}
    )
    (root / "columns.onnx").write_bytes(exported.SerializeToString())

    def columns_want(frame: pd.DataFrame) -> dict[str, Any]:
        return {
            "output_label": pipe.predict(frame),
            "output_probability": pipe.predict_proba(frame),
        }

    cases.append(
        Case(
            "onnxcols",
            root / "columns.onnx",
            test,
            columns_want,
            batch=False,
            classes=["no", "yes"],
        )
    )

    # 7. An MLflow model directory, written by MLflow (when the extra is installed).
    if MLFLOW:
        import mlflow.sklearn
        from mlflow.models import infer_signature

        mdir = root / "mlflow_model"
        mlflow.sklearn.save_model(
            pipe,
            str(mdir),
            signature=infer_signature(train, pipe.predict(train)),
            input_example=train.head(3),
        )
        cases.append(
            Case(
                "mlflow",
                pack(mdir, root / "mlflow.tar.gz"),
                test,
                sklearn_answer(pipe),
                {"trust": True},
            )
        )

    # 8. A multi-file Python model taking a table (it gets a DataFrame).
    pdir = root / "pymodel"
    pdir.mkdir()
    (pdir / "model.py").write_text(PYTHON_MODEL)
    (pdir / "scoring.py").write_text(PYTHON_HELPER)
    (pdir / "weights.json").write_text(json.dumps({"city": {"rome": 2.0, "lima": -1.0}}))
    (pdir / "requirements.txt").write_text("numpy>=1.20\npandas\n")
    test.to_parquet(root / "py_sample.parquet")

    def py_want(frame: pd.DataFrame) -> dict[str, Any]:
        weights = {"rome": 2.0, "lima": -1.0}
        return {"score": frame["city"].map(weights).fillna(0).to_numpy() + frame["income"] / 10}

    cases.append(
        Case(
            "pymodel",
            pack(pdir, root / "pymodel.tar.gz"),
            test,
            py_want,
            {"trust": True},
            sample=root / "py_sample.parquet",
        )
    )
    return cases


PYTHON_MODEL = textwrap.dedent(
    """
    import json

    from scoring import score


    class Model:
        def load(self, artifact_dir):
            self.weights = json.loads((artifact_dir / "weights.json").read_text())["city"]

        def predict(self, frame):
            return {"score": score(frame, self.weights)}
    """
)
PYTHON_HELPER = textwrap.dedent(
    """
    def score(frame, weights):
        return frame["city"].map(weights).fillna(0).to_numpy() + frame["income"].to_numpy() / 10
    """
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, dict[str, Case]]]:
    root = tmp_path_factory.mktemp("tables")
    cases = build_cases(root)
    roots = {"ZEROSERVE_BATCH_ROOTS": json.dumps([str(tmp_path_factory.getbasetemp())])}
    with ServerProcess(tmp_path_factory.mktemp("tables-server"), env=roots) as proc:
        api = Api(proc.url)
        for case in cases:
            api.register(case.name, case.path, case.sample, **case.form)
            api.deploy(case.name, min_replicas=1, max_replicas=1)
        yield api, {c.name: c for c in cases}


NAMES = [
    "mixed",
    "imputer",
    "hgb",
    "tuned",
    "xgb3",
    "lgb3",
    "zipmap",
    "onnxcols",
    "mlflow",
    "pymodel",
]


def same(got: dict[str, Any], want: dict[str, Any], atol: float = 1e-6) -> None:
    assert set(want) <= set(got), f"answered {sorted(got)}, expected {sorted(want)}"
    for name, raw in want.items():
        values = np.asarray(raw)
        answer = np.asarray(got[name])
        if values.dtype.kind in "OUSb" or "label" in name:
            assert answer.tolist() == values.tolist(), name
        else:
            np.testing.assert_allclose(answer.astype(np.float64), values, rtol=1e-5, atol=atol)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in json.loads(frame.to_json(orient="records"))
    ]


def records_t(frame: pd.DataFrame) -> dict[str, list[Any]]:
    rows = records(frame)
    return {c: [r[c] for r in rows] for c in frame.columns}


@pytest.mark.parametrize("name", NAMES)
def test_json_rows_and_columns_answer_like_the_library(
    served: tuple[Api, dict[str, Case]], name: str
) -> None:
    api, cases = served
    if name not in cases:
        pytest.skip("the mlflow extra is not installed (pip install 'zeroserve[mlflow]')")
    case = cases[name]
    want = case.want(case.frame)
    case.classes = getattr(case.want, "classes", None) or case.classes
    if name == "zipmap":  # an unnamed float matrix: rows are lists
        body: dict[str, Any] = {"instances": case.frame.to_numpy().tolist()}
        columns: dict[str, Any] = {"inputs": {"X": case.frame.to_numpy().tolist()}}
    else:
        shuffled = case.frame[list(reversed(case.frame.columns))]
        body = {"instances": records(shuffled)}  # keys in another order: matched by name
        columns = {"inputs": records_t(shuffled)}
    rows = api.invoke(name, body)
    assert rows.status_code == 200, rows.text
    same(codec.json_response(rows.content, single=next(iter(want))), want)
    cols = api.invoke(name, columns)
    assert cols.status_code == 200, cols.text
    same(codec.json_response(cols.content), want)
    if case.classes is not None:  # the class of each probability column, in the answer
        assert rows.json()["classes"] == case.classes
        assert cols.json()["classes"] == case.classes


@pytest.mark.parametrize("name", NAMES)
def test_open_inference_protocol_answers_like_the_library(
    served: tuple[Api, dict[str, Case]], name: str
) -> None:
    api, cases = served
    if name not in cases:
        pytest.skip("the mlflow extra is not installed (pip install 'zeroserve[mlflow]')")
    case = cases[name]
    want = case.want(case.frame)
    meta = api.check(api.http.get(f"/v2/models/{name}"))
    names = [i["name"] for i in meta["inputs"]]
    if len(names) == 1:
        dtype = np.float32 if meta["inputs"][0]["datatype"] == "FP32" else np.float64
        data: Any = {names[0]: case.frame.to_numpy(dtype)}
        body, headers = codec.v2_request(data, binary=True)
    else:
        assert sorted(names) == sorted(case.frame.columns)
        frame = case.frame[list(reversed(names))]
        if meta["inputs"][1]["datatype"] == "FP32":  # ONNX per-column inputs take float32
            frame = frame.astype({c: np.float32 for c in frame.columns if c != "city"})
        body, headers = codec.v2_request(frame)
    response = api.http.post(f"/v2/models/{name}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    same(codec.v2_response(response.content, dict(response.headers)), want)


@pytest.mark.parametrize("name", NAMES)
def test_batch_with_shuffled_columns_answers_like_the_library(
    served: tuple[Api, dict[str, Case]], name: str, tmp_path: Path
) -> None:
    api, cases = served
    if name not in cases:
        pytest.skip("the mlflow extra is not installed (pip install 'zeroserve[mlflow]')")
    case = cases[name]
    if not case.batch:
        pytest.skip("batch transform takes one input matrix or a table, not several tensors")
    frame = case.batch_frame if case.batch_frame is not None else case.frame
    frame = frame.reset_index(drop=True)
    want = case.want(frame)
    data = frame.copy()
    data.columns = [str(c) for c in data.columns]
    if case.shuffle:
        data = data[list(reversed(data.columns))]
    data.insert(1, "id", np.arange(len(data)) + 1000)
    data.to_parquet(tmp_path / "in.parquet")
    run = api.check(
        api.http.post(
            "/api/batch",
            json={
                "model": name,
                "input_uri": str(tmp_path / "in.parquet"),
                "output_uri": str(tmp_path / "out"),
                "id_column": "id",
            },
        )
    )
    deadline = time.monotonic() + 120
    while (state := api.check(api.http.get(f"/api/batch/{run['run_id']}")))["state"] == "running":
        assert time.monotonic() < deadline, "the batch run did not finish"
        time.sleep(0.2)
    assert state["state"] == "done", json.dumps(state)
    table = batch.read_outputs(str(tmp_path / "out")).to_pandas().set_index("id")
    table = table.loc[np.arange(len(frame)) + 1000]
    got: dict[str, Any] = {}
    for key, values in want.items():
        if np.asarray(values).ndim == 2:
            got[key] = table[[f"{key}_{k}" for k in range(values.shape[1])]].to_numpy()
        else:
            got[key] = table[key].to_numpy()
    same(got, want)


def test_an_endpoint_can_answer_only_the_label(served: tuple[Api, dict[str, Case]]) -> None:
    api, cases = served
    case = cases["tuned"]
    api.deploy("tuned", endpoint="tuned-labels", outputs=["label"])
    response = api.invoke("tuned-labels", {"instances": records(case.frame)})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == case.want(case.frame)["label"].tolist()
    body, headers = codec.v2_request({"input": case.frame.to_numpy(np.float64)}, binary=True)
    v2 = api.http.post("/v2/models/tuned-labels/infer", content=body, headers=headers)
    assert [o["name"] for o in v2.json()["outputs"]] == ["label"]
    refused = api.http.post(
        "/api/deploy", json={"model": "tuned", "endpoint": "tuned-x", "outputs": ["score"]}
    )
    assert refused.status_code == 400
    assert "outputs ['score'] are not outputs of this model" in refused.json()["error"]


@pytest.mark.parametrize("name", NAMES)
def test_the_python_client_answers_like_the_library(
    served: tuple[Api, dict[str, Case]], name: str
) -> None:
    """A DataFrame in (columns shuffled), a DataFrame out, equal to the library's own answer."""
    from zeroserve import Client

    api, cases = served
    if name not in cases:
        pytest.skip("the mlflow extra is not installed (pip install 'zeroserve[mlflow]')")
    case = cases[name]
    want = case.want(case.frame)
    client = Client(api.url)
    if name == "zipmap":  # an unnamed float matrix: an array in, arrays out
        got = client.invoke(name, case.frame.to_numpy(np.float32))
        same({k: np.asarray(v) for k, v in got.items()}, want)
        return
    shuffled = case.frame[list(reversed(case.frame.columns))]
    answer = client.invoke(name, shuffled)
    assert isinstance(answer, pd.DataFrame) and list(answer.index) == list(shuffled.index)
    flat: dict[str, Any] = {}
    for key, value in want.items():
        if np.asarray(value).ndim == 2:  # a 2-D output comes back as key_0, key_1, ...
            flat[key] = np.column_stack(
                [answer[f"{key}_{i}"] for i in range(np.asarray(value).shape[1])]
            )
        else:
            flat[key] = answer[key].to_numpy()
    same(flat, want)
