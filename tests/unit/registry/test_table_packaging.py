"""Registering the models people have: typed columns inferred, bad input refused with the fix."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zeroserve.errors import InvalidArtifact, UntrustedArtifact
from zeroserve.registry.packaging import PackageRequest, package
from zeroserve.registry.python_dir import pack
from zeroserve.types import ColumnType

RNG = np.random.default_rng(0)


def frame(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "city": RNG.choice(["paris", "rome", "oslo"], n),
            "x": RNG.normal(size=n),
            "n": RNG.integers(0, 9, n),
        }
    )


def pipeline(impute: bool = False) -> object:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = make_pipeline(SimpleImputer(), StandardScaler()) if impute else StandardScaler()
    df = frame()
    return make_pipeline(
        ColumnTransformer([("c", OneHotEncoder(), ["city"]), ("v", numeric, ["x", "n"])]),
        LogisticRegression(),
    ).fit(df, df["x"] > 0)


def test_column_transformer_gives_a_table_signature_without_a_sample(tmp_path: Path) -> None:
    import skops.io as sio

    sio.dump(pipeline(impute=True), tmp_path / "m.skops")
    result = package(PackageRequest(source=tmp_path / "m.skops", dest=tmp_path / "a"))
    cols = {c.name: c for c in result.signature.columns or []}
    assert [*cols] == ["city", "x", "n"]
    assert cols["city"].type is ColumnType.STRING and not cols["city"].nullable
    assert cols["x"].nullable and cols["n"].nullable  # the imputer takes missing values
    assert result.signature.classes == [False, True]
    assert [o.name for o in result.signature.outputs] == ["label", "probabilities"]


def test_a_model_that_refuses_nulls_is_not_nullable(tmp_path: Path) -> None:
    import skops.io as sio

    sio.dump(pipeline(), tmp_path / "m.skops")
    frame().to_parquet(tmp_path / "s.parquet")
    result = package(
        PackageRequest(
            source=tmp_path / "m.skops", dest=tmp_path / "a", sample=tmp_path / "s.parquet"
        )
    )
    cols = {c.name: c for c in result.signature.columns or []}
    assert not cols["x"].nullable and cols["n"].type is ColumnType.INT


def test_a_sample_column_of_objects_that_are_not_strings_is_refused(tmp_path: Path) -> None:
    import skops.io as sio

    sio.dump(pipeline(), tmp_path / "m.skops")
    bad = frame().astype({"city": object})
    bad.loc[0, "city"] = 3.5
    bad.to_pickle(tmp_path / "ignored.pkl")
    bad["city"] = bad["city"].map(lambda v: v if isinstance(v, str) else {"a": 1})
    pytest.importorskip("pyarrow")
    path = tmp_path / "s.csv"
    bad.assign(city=bad["city"].astype(str)).to_csv(path, index=False)
    # A CSV cannot hold objects; test the rule on the frame itself.
    from zeroserve.registry.signatures import columns_from_frame

    with pytest.raises(InvalidArtifact, match=r"holds dict values.*convert the column to strings"):
        columns_from_frame(bad)


def test_a_string_column_the_model_cannot_encode_is_refused(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    df = frame()
    x = df[["x", "n", "n"]].to_numpy()  # fitted on an array: no names, three numbers
    sio.dump(LogisticRegression().fit(x, x[:, 0] > 0), tmp_path / "m.skops")
    df.to_parquet(tmp_path / "s.parquet")  # a string column the model cannot encode
    with pytest.raises(InvalidArtifact, match=r"city: string.*needs an encoder"):
        package(
            PackageRequest(
                source=tmp_path / "m.skops", dest=tmp_path / "a", sample=tmp_path / "s.parquet"
            )
        )


def test_onnx_output_types_without_a_tensor_form_name_the_exporter_option() -> None:
    from types import SimpleNamespace

    from zeroserve.runtimes.onnx import check_outputs

    def session(*types: str) -> SimpleNamespace:
        outs = [SimpleNamespace(name=f"out{i}", type=t) for i, t in enumerate(types)]
        return SimpleNamespace(get_outputs=lambda: outs)

    zipmap = "seq(map(string,tensor(float)))"
    assert check_outputs(session("tensor(int64)", zipmap)) == ["out1"]
    with pytest.raises(InvalidArtifact, match=r"out1.*seq\(tensor\(float\)\).*'zipmap': False"):
        check_outputs(session("tensor(int64)", "seq(tensor(float))"))


def test_python_directory_needs_its_class_and_its_requirements(tmp_path: Path) -> None:
    src = tmp_path / "pym"
    src.mkdir()
    (src / "model.py").write_text("class Other:\n    def predict(self, x):\n        return x\n")
    with pytest.raises(InvalidArtifact, match=r"no class 'Model'.*Other.*--entrypoint"):
        package(PackageRequest(source=src, dest=tmp_path / "a", trusted=True))
    (src / "model.py").write_text(
        textwrap.dedent(
            """
            from helper import double

            class Model:
                def predict(self, inputs):
                    return double(inputs["input"])
            """
        )
    )
    (src / "helper.py").write_text("def double(x):\n    return x * 2\n")
    (src / "requirements.txt").write_text("numpy\nzeroserve-no-such-package>=1\n")
    np.save(tmp_path / "s.npy", np.ones((3, 2)))
    req = PackageRequest(
        source=pack(src, tmp_path / "pym.tar.gz"),
        dest=tmp_path / "b",
        trusted=True,
        sample=tmp_path / "s.npy",
    )
    with pytest.raises(InvalidArtifact, match=r"zeroserve-no-such-package is not installed.*pip"):
        package(req)
    (src / "requirements.txt").write_text("numpy>=1.0\n")
    req.source = pack(src, tmp_path / "pym2.tar.gz")
    result = package(req)
    assert [o.name for o in result.signature.outputs] == ["prediction"]
    assert (tmp_path / "b" / "helper.py").is_file()


def test_mlflow_flavor_zeroserve_does_not_serve_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "MLmodel").write_text("flavors:\n  pytorch:\n    data: model.pth\n")
    with pytest.raises(InvalidArtifact, match=r"flavors pytorch; zeroserve serves sklearn"):
        package(PackageRequest(source=tmp_path / "mm", dest=tmp_path / "a"))


def test_mlflow_pickles_need_trust(tmp_path: Path) -> None:
    import joblib

    (tmp_path / "mm").mkdir()
    joblib.dump(pipeline(), tmp_path / "mm" / "model.pkl")
    (tmp_path / "mm" / "MLmodel").write_text(
        "flavors:\n  sklearn:\n    pickled_model: model.pkl\n"
        + "    serialization_format: cloudpickle\n"
        + "signature:\n  inputs: '"
        + json.dumps(
            [
                {"type": "string", "name": "city"},
                {"type": "double", "name": "x"},
                {"type": "long", "name": "n", "required": False},
            ]
        )
        + "'\n"
    )
    with pytest.raises(UntrustedArtifact, match=r"pickle.*--trust"):
        package(PackageRequest(source=tmp_path / "mm", dest=tmp_path / "a"))
    result = package(PackageRequest(source=tmp_path / "mm", dest=tmp_path / "b", trusted=True))
    cols = {c.name: c for c in result.signature.columns or []}
    assert cols["city"].type is ColumnType.STRING


def test_numeric_dataframe_sample_is_reordered_by_the_models_names(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.ensemble import HistGradientBoostingRegressor

    df = frame()[["x", "n"]]
    sio.dump(HistGradientBoostingRegressor(max_iter=5).fit(df, df["x"]), tmp_path / "m.skops")
    df[["n", "x"]].to_parquet(tmp_path / "s.parquet")
    result = package(
        PackageRequest(
            source=tmp_path / "m.skops", dest=tmp_path / "a", sample=tmp_path / "s.parquet"
        )
    )
    spec = result.signature.inputs[0]
    assert result.signature.columns is None and spec.names == ["x", "n"]
    assert spec.allow_nan  # HistGradientBoosting handles NaN itself
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "reference.npy")[:, 0], df["x"][:200])
