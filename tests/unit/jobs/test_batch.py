"""Batch transform: planning, exact row coverage, outputs, resume, orphans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zeroserve.errors import Conflict, ModelError, NotFound
from zeroserve.jobs import batch, batch_shard
from zeroserve.jobs.batch import (
    BadBatchInput,
    BatchInputNotFound,
    Manifest,
    cancel,
    load_manifest,
    plan,
    read_outputs,
    read_shard,
    resume,
    run_local,
    run_shard,
    status,
)
from zeroserve.types import Arrays

N_FEATURES = 5
WEIGHTS = np.arange(1, N_FEATURES + 1, dtype=np.float32) / 10


def linear(arrays: Arrays) -> Arrays:
    """A deterministic model: a score and two 'probabilities' per row."""
    x = arrays["input"]
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape[1] == N_FEATURES
    score = x @ WEIGHTS
    p = 1 / (1 + np.exp(-score))
    return {"score": score, "proba": np.stack([1 - p, p], axis=1)}


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    x = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    return ids, x


COLUMNS = [f"f{j}" for j in range(N_FEATURES)]


def write_input(
    path: Path, fmt: str, ids: np.ndarray[Any, Any], x: np.ndarray[Any, Any], **kw: Any
) -> Path:
    if fmt == "parquet":
        table = pa.table({"id": ids, **{c: x[:, j] for j, c in enumerate(COLUMNS)}})
        pq.write_table(table, path, row_group_size=kw.get("row_group_size", 64))
    elif fmt == "csv":
        lines = ["id," + ",".join(COLUMNS)]
        lines += [
            f"{i}," + ",".join(repr(float(v)) for v in row) for i, row in zip(ids, x, strict=False)
        ]
        path.write_text("\n".join(lines) + "\n")
    else:
        lines = [
            json.dumps({"id": int(i), **{c: float(v) for c, v in zip(COLUMNS, row, strict=False)}})
            for i, row in zip(ids, x, strict=False)
        ]
        path.write_text("\n".join(lines) + "\n")
    return path


def outputs_by_id(out: Path) -> dict[int, tuple[float, float, float]]:
    table = read_outputs(str(out))
    rows = zip(
        table.column("id").to_pylist(),
        table.column("score").to_pylist(),
        table.column("proba_0").to_pylist(),
        table.column("proba_1").to_pylist(),
        strict=False,
    )
    result: dict[int, tuple[float, float, float]] = {}
    for i, s, p0, p1 in rows:
        assert i not in result, f"id {i} written twice"
        result[i] = (s, p0, p1)
    return result


def assert_outputs_match(out: Path, ids: np.ndarray[Any, Any], x: np.ndarray[Any, Any]) -> None:
    expected = linear({"input": x})
    got = outputs_by_id(out)
    assert sorted(got) == ids.tolist()
    score = np.array([got[i][0] for i in ids.tolist()])
    proba1 = np.array([got[i][2] for i in ids.tolist()])
    np.testing.assert_allclose(score, expected["score"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(proba1, expected["proba"][:, 1], rtol=1e-6, atol=1e-6)


# -- planning --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("shard_rows", [1, 7, 1000])
def test_line_shards_cover_every_row_with_exact_line_numbers(
    tmp_path: Path, fmt: str, shard_rows: int
) -> None:
    # Blank lines, CRLF endings and a last line without a newline must not shift
    # row counts or line numbers.
    ids, x = make_data(40)
    src = write_input(tmp_path / f"in.{fmt}", fmt, ids, x)
    text = src.read_text().splitlines()
    text.insert(5, "")
    text.insert(20, "")
    src.write_bytes(("\r\n".join(text) + "\r\n\r\n").encode()[:-4])
    m = plan(str(src), str(tmp_path / "out"), shard_rows=shard_rows, id_column="id")
    assert m.total_rows == 40
    assert sum(s.rows for s in m.shards) == 40
    assert all(s.rows == shard_rows for s in m.shards[:-1])
    assert [s.start_row for s in m.shards] == list(np.cumsum([0] + [s.rows for s in m.shards])[:-1])
    # Byte ranges tile the file after the header, and each first_line is right.
    assert m.shards[0].byte_start == (len(text[0]) + 2 if fmt == "csv" else 0)
    for a, b in zip(m.shards, m.shards[1:], strict=False):
        assert a.byte_end == b.byte_start
    for s in m.shards:
        assert s.first_line == src.read_bytes()[: s.byte_start].count(b"\n") + 1
    got = np.concatenate([read_shard(m, s).ids for s in m.shards])
    np.testing.assert_array_equal(got, ids)
    feats = np.concatenate([read_shard(m, s).features for s in m.shards])
    np.testing.assert_array_equal(feats, x)


def test_parquet_shards_follow_row_groups(tmp_path: Path) -> None:
    ids, x = make_data(250)
    src = write_input(tmp_path / "in.parquet", "parquet", ids, x, row_group_size=40)
    m = plan(str(src), str(tmp_path / "out"), shard_rows=100, id_column="id")
    # Whole row groups (6 of 40 rows, one of 10), as many as fit in 100 rows.
    assert [s.rows for s in m.shards] == [80, 80, 90]
    assert [s.row_groups for s in m.shards] == [[0, 1], [2, 3], [4, 5, 6]]
    big = write_input(tmp_path / "big.parquet", "parquet", ids, x, row_group_size=250)
    m = plan(str(big), str(tmp_path / "out2"), shard_rows=100, feature_columns=COLUMNS)
    assert [s.rows for s in m.shards] == [83, 83, 84]
    assert [s.skip_rows for s in m.shards] == [0, 83, 166]
    data = [read_shard(m, s) for s in m.shards]
    np.testing.assert_array_equal(np.concatenate([d.features for d in data]), x)
    # Without an id column, a row's id is its 0-based position.
    np.testing.assert_array_equal(np.concatenate([d.ids for d in data]), np.arange(250))


def test_read_shard_gives_contiguous_float32(tmp_path: Path) -> None:
    ids, x = make_data(30)
    src = write_input(tmp_path / "in.parquet", "parquet", ids, x.astype(np.float64))
    m = plan(str(src), str(tmp_path / "out"), id_column="id")
    data = read_shard(m, m.shards[0])
    assert data.features.dtype == np.float32 and data.features.flags.c_contiguous
    assert data.features.shape == (30, N_FEATURES)


def test_plan_returns_the_stored_manifest_for_an_unchanged_input(tmp_path: Path) -> None:
    ids, x = make_data(50)
    src = write_input(tmp_path / "in.csv", "csv", ids, x)
    out = tmp_path / "out"
    first = plan(str(src), str(out), shard_rows=10, id_column="id")
    (out / ".part-00001.parquet.abc.tmp").write_bytes(b"left by a killed writer")
    again = plan(str(src), str(out), shard_rows=999, id_column="id")
    assert again.shards == first.shards and again.shard_rows == 10
    assert not (out / ".part-00001.parquet.abc.tmp").exists()
    src.write_text(src.read_text() + "9999,1,2,3,4,5\n")
    with pytest.raises(Conflict, match="changed since"):
        plan(str(src), str(out), id_column="id")
    assert len(plan(str(src), str(out), id_column="id", overwrite=True).shards) == 1


# -- outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "out_fmt"),
    [
        ("csv", "csv"),
        ("jsonl", "jsonl"),
        ("parquet", "parquet"),
        ("csv", "parquet"),
        ("parquet", "jsonl"),
    ],
)
def test_outputs_joined_by_id_equal_predictions(tmp_path: Path, fmt: str, out_fmt: str) -> None:
    ids, x = make_data(203)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(ids))  # ids out of order: the join must use them
    ids, x = ids[order], x[order]
    src = write_input(tmp_path / f"in.{fmt}", fmt, ids, x, row_group_size=32)
    out = tmp_path / "out"
    m = plan(str(src), str(out), shard_rows=50, id_column="id", output_format=out_fmt)
    result = run_local(m, linear, progress=False, batch_rows=16)
    assert result.state == "done" and result.rows_written == 203
    assert sorted(p.name for p in out.glob("part-*")) == [
        f"part-{i:05d}.{out_fmt}" for i in range(len(m.shards))
    ]
    assert read_outputs(str(out)).column_names == ["id", "score", "proba_0", "proba_1"]
    assert_outputs_match(out, np.sort(ids), x[np.argsort(ids)])
    stored = load_manifest(str(out))
    for s in stored.shards:
        assert s.status == "done" and s.checksum and s.checksum.startswith("sha256:")
        assert s.rows_written == s.rows


def test_real_sklearn_model(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    ids, x = make_data(300)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)

    def predict(arrays: Arrays) -> Arrays:
        return {
            "label": model.predict(arrays["input"]),
            "proba": model.predict_proba(arrays["input"]),
        }

    src = write_input(tmp_path / "in.parquet", "parquet", ids, x)
    out = tmp_path / "out"
    run_local(plan(str(src), str(out), shard_rows=64, id_column="id"), predict, progress=False)
    table = read_outputs(str(out))
    assert table.column("id").to_pylist() == ids.tolist()
    np.testing.assert_array_equal(table.column("label").to_numpy(), model.predict(x))
    np.testing.assert_allclose(table.column("proba_1").to_numpy(), model.predict_proba(x)[:, 1])


def test_output_with_wrong_row_count_is_a_model_error(tmp_path: Path) -> None:
    ids, x = make_data(20)
    src = write_input(tmp_path / "in.csv", "csv", ids, x)
    m = plan(str(src), str(tmp_path / "out"), id_column="id")
    with pytest.raises(ModelError, match="expected 20 rows"):
        run_local(m, lambda a: {"y": np.zeros(3)}, progress=False)


# -- resume, orphans, cancel -----------------------------------------------------------


class Flaky:
    """``linear``, but raises after ``fail_after`` calls (a crash mid-run)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.rows = 0
        self.fail_after = fail_after

    def __call__(self, arrays: Arrays) -> Arrays:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("replica died")
        self.calls += 1
        self.rows += len(arrays["input"])
        return linear(arrays)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_resume_after_a_crash_runs_only_what_is_missing(tmp_path: Path, fmt: str) -> None:
    ids, x = make_data(500)
    src = write_input(tmp_path / f"in.{fmt}", fmt, ids, x, row_group_size=50)
    out = tmp_path / "out"
    m = plan(str(src), str(out), shard_rows=100, id_column="id")
    crashing = Flaky(fail_after=7)  # 3 full shards of 2 batches each, then mid-shard
    with pytest.raises(ModelError, match="replica died"):
        run_local(m, crashing, progress=False, batch_rows=50)
    mid = status(str(out))
    assert (mid.state, mid.shards_done, mid.shards_failed) == ("failed", 3, 1)
    assert "shard 00003" in mid.errors[0]
    again = Flaky()
    result = run_local(plan(str(src), str(out), id_column="id"), again, progress=False)
    assert result.state == "done" and result.rows_written == 500
    assert again.rows == 200  # the two shards that were not done, nothing else
    assert_outputs_match(out, ids, x)


def test_output_without_manifest_entry_is_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kill between the output's rename and the manifest commit.
    ids, x = make_data(300)
    src = write_input(tmp_path / "in.jsonl", "jsonl", ids, x)
    out = tmp_path / "out"
    m = plan(str(src), str(out), shard_rows=100, id_column="id")
    real_commit = batch_shard._commit
    commits: list[int] = []

    def killed_on_second(*args: Any, **kwargs: Any) -> Any:
        if len(commits) == 1:
            raise KeyboardInterrupt("killed before the manifest update")
        commits.append(1)
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(batch_shard, "_commit", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_local(m, linear, progress=False)
    monkeypatch.setattr(batch_shard, "_commit", real_commit)
    assert (out / "part-00001.jsonl").exists()
    assert load_manifest(str(out)).shards[1].status == "pending"
    counting = Flaky()
    run_local(plan(str(src), str(out)), counting, progress=False)
    stored = load_manifest(str(out))
    assert stored.shards[1].adopted and stored.shards[1].status == "done"
    assert counting.rows == 100  # only shard 2 was predicted
    assert_outputs_match(out, ids, x)


def test_foreign_output_file_is_rewritten_not_adopted(tmp_path: Path) -> None:
    ids, x = make_data(200)
    src = write_input(tmp_path / "in.parquet", "parquet", ids, x)
    out = tmp_path / "out"
    m = plan(str(src), str(out), shard_rows=100, id_column="id")
    # Right shape, wrong ids (e.g. a file from another run).
    pq.write_table(
        pa.table({"id": ids[:100] + 1, "score": np.zeros(100)}), out / "part-00000.parquet"
    )
    (out / "part-00001.parquet").write_bytes(b"truncated garbage")
    counting = Flaky()
    run_local(m, counting, progress=False)
    assert counting.rows == 200
    assert not any(s.adopted for s in load_manifest(str(out)).shards)
    assert_outputs_match(out, ids, x)


def test_run_shard_is_idempotent(tmp_path: Path) -> None:
    ids, x = make_data(100)
    src = write_input(tmp_path / "in.csv", "csv", ids, x)
    out = tmp_path / "out"
    m = plan(str(src), str(out), shard_rows=50, id_column="id")
    counting = Flaky()
    first = run_shard(m, m.shards[0], counting)
    again = run_shard(m, m.shards[0], counting)
    assert first == again and counting.rows == 50


def test_cancel_then_resume(tmp_path: Path) -> None:
    ids, x = make_data(300)
    src = write_input(tmp_path / "in.parquet", "parquet", ids, x, row_group_size=100)
    out = tmp_path / "out"
    m = plan(str(src), str(out), shard_rows=100, id_column="id")

    def cancelling(arrays: Arrays) -> Arrays:
        cancel(str(out))  # cancelled while shard 0 runs: it finishes, no more start
        return linear(arrays)

    run_local(m, cancelling, progress=False)
    assert status(str(out)).state == "cancelled"
    assert status(str(out)).shards_done == 1
    with pytest.raises(Conflict, match="cancelled"):
        run_local(m, linear, progress=False)
    result = resume(str(out), linear, progress=False, workers=2)
    assert result.state == "done"
    assert_outputs_match(out, ids, x)


def test_progress_bar_and_threads(tmp_path: Path) -> None:
    ids, x = make_data(400)
    src = write_input(tmp_path / "in.csv", "csv", ids, x)
    out = tmp_path / "out"
    result = run_local(
        plan(str(src), str(out), shard_rows=50, id_column="id"), linear, workers=3, progress=True
    )
    assert (result.shards, result.shards_done, result.rows_done) == (8, 8, 400)
    assert_outputs_match(out, ids, x)


# -- errors ----------------------------------------------------------------------------


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(BatchInputNotFound, match=r"nowhere\.csv does not exist") as info:
        plan(str(tmp_path / "nowhere.csv"), str(tmp_path / "out"))
    assert isinstance(info.value, NotFound) and info.value.status_code == 404


def test_unsupported_format_and_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(BadBatchInput, match="pass format="):
        plan(str(tmp_path / "data.xlsx"), str(tmp_path / "out"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BadBatchInput, match=r"cannot read .* as Parquet"):
        plan(str(tmp_path / "bad.parquet"), str(tmp_path / "out"))
    with pytest.raises(BadBatchInput, match="is a directory"):
        plan(str(tmp_path), str(tmp_path / "out"), format="csv")


def test_id_column_and_feature_count_are_checked(tmp_path: Path) -> None:
    ids, x = make_data(10)
    src = write_input(tmp_path / "in.csv", "csv", ids, x)
    with pytest.raises(BadBatchInput, match=r"id column 'key' not found .* id, f0, f1"):
        plan(str(src), str(tmp_path / "o1"), id_column="key")
    with pytest.raises(BadBatchInput, match=r"has 5 feature columns .* the model takes 98"):
        plan(str(src), str(tmp_path / "o2"), id_column="id", n_features=98)
    m = plan(str(src), str(tmp_path / "o3"), id_column="id", feature_columns=["f1", "f3"])
    np.testing.assert_array_equal(read_shard(m, m.shards[0]).features, x[:, [1, 3]])


CSV_BAD = """id,f0,f1,f2,f3,f4
1,0.1,0.2,0.3,0.4,0.5

2,0.1,0.2,0.3,0.4
3,0.1,abc,0.3,0.4,0.5
4,0.1,0.2,0.3,0.4,0.5
5,0.1,,0.3,0.4,0.5
6,1,2,3,4,5
"""


def test_malformed_csv_rows_fail_with_their_line_number(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(CSV_BAD)
    out = tmp_path / "out"
    m = plan(str(src), str(out), id_column="id")
    with pytest.raises(BadBatchInput) as info:
        run_local(m, linear, progress=False)
    message = str(info.value)
    assert "line 4: expected 5 numeric features, got 4" in message
    assert "and 2 more bad rows" in message and "skip_bad_rows=True" in message
    assert info.value.details["line"] == 4
    assert status(str(out)).state == "failed"
    assert not list(out.glob("part-*"))


def test_malformed_rows_skipped_into_errors_file(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(CSV_BAD)
    out = tmp_path / "out"
    m = plan(str(src), str(out), shard_rows=4, id_column="id")
    result = run_local(m, linear, progress=False, skip_bad_rows=True)
    assert (result.state, result.rows_written, result.bad_rows) == ("done", 3, 3)
    errors = [json.loads(line) for line in (out / "errors-00000.jsonl").read_text().splitlines()]
    errors += [json.loads(line) for line in (out / "errors-00001.jsonl").read_text().splitlines()]
    assert [(e["line"], e["reason"]) for e in errors] == [
        (4, "expected 5 numeric features, got 4"),
        (5, "column f1: 'abc' is not a number"),
        (7, "column f1: missing value"),
    ]
    assert errors[1]["text"] == "3,0.1,abc,0.3,0.4,0.5"
    assert read_outputs(str(out)).column("id").to_pylist() == [1, 4, 6]


def test_malformed_jsonl_rows(tmp_path: Path) -> None:
    good = {"id": 1, **dict.fromkeys(COLUMNS, 0.5)}
    rows = [
        json.dumps(good),
        '{"id": 2, "f0": 1',
        json.dumps({k: v for k, v in good.items() if k != "f3"} | {"id": 3}),
        json.dumps(good | {"id": 4, "f2": "abc"}),
        "",
        json.dumps(good | {"id": 5}),
        "[1, 2, 3]",
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    m = plan(str(src), str(out), id_column="id")
    with pytest.raises(BadBatchInput, match=r"line 2: invalid JSON"):
        run_local(m, linear, progress=False)
    run_local(plan(str(src), str(out)), linear, progress=False, skip_bad_rows=True)
    errors = [json.loads(x) for x in (out / "errors-00000.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [2, 3, 4, 7]
    assert errors[1]["reason"] == "expected 5 numeric features, got 4 (missing f3)"
    assert errors[2]["reason"] == "column f2: 'abc' is not a number"
    assert errors[3]["reason"] == "expected a JSON object, got list"
    assert read_outputs(str(out)).column("id").to_pylist() == [1, 5]


def test_parquet_nulls_are_bad_rows_with_row_numbers(tmp_path: Path) -> None:
    ids, x = make_data(50)
    f2 = pa.array(x[:, 2], mask=np.isin(np.arange(50), [16, 40]))
    cols = {c: x[:, j] for j, c in enumerate(COLUMNS)} | {"f2": f2}
    pq.write_table(pa.table({"id": ids, **cols}), tmp_path / "in.parquet", row_group_size=20)
    out = tmp_path / "out"
    m = plan(str(tmp_path / "in.parquet"), str(out), shard_rows=20, id_column="id")
    with pytest.raises(BadBatchInput, match="row 17: column f2: missing value"):
        run_local(m, linear, progress=False)
    result = run_local(m, linear, progress=False, skip_bad_rows=True)
    assert (result.rows_written, result.bad_rows) == (48, 2)
    errors = [json.loads(x) for x in (out / "errors-00002.jsonl").read_text().splitlines()]
    assert errors == [{"row": 41, "reason": "column f2: missing value", "text": None}]


def test_string_ids_survive_the_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("key,a,b\n007,1,2\nx-1,3,4\n")
    out = tmp_path / "out"
    m: Manifest = plan(str(src), str(out), id_column="key", output_format="csv")
    assert m.id_type == "string"
    run_local(m, lambda a: {"s": a["input"].sum(axis=1)}, progress=False)
    table = read_outputs(str(out))
    assert table.column("key").to_pylist() == ["007", "x-1"]
    assert table.column("s").to_pylist() == [3.0, 7.0]


def test_public_names_are_exported() -> None:
    assert batch.__all__ == sorted(batch.__all__)
    for name in batch.__all__:
        assert hasattr(batch, name)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_fsspec_urls_input_and_output(tmp_path: Path, fmt: str) -> None:
    # memory:// stands in for s3://: no local paths, no os.replace, no flock.
    import fsspec

    ids, x = make_data(120)
    local = write_input(tmp_path / f"in.{fmt}", fmt, ids, x, row_group_size=30)
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"/bucket-{fmt}/in.{fmt}", local.read_bytes())
    src, out = f"memory://bucket-{fmt}/in.{fmt}", f"memory://bucket-{fmt}/out"
    m = plan(src, out, shard_rows=40, id_column="id")
    crashing = Flaky(fail_after=1)
    with pytest.raises(ModelError):
        run_local(m, crashing, progress=False, batch_rows=40)
    assert status(out).shards_done == 1
    run_local(plan(src, out), linear, progress=False)
    assert sorted(Path(p).name for p in fs.ls(f"/bucket-{fmt}/out", detail=False)) == [
        "manifest.json",
        *[f"part-{i:05d}.{fmt}" for i in range(len(m.shards))],
    ]
    # CSV shards hold shard_rows lines; Parquet shards never split a row group.
    assert len(m.shards) == (3 if fmt == "csv" else 4)
    table = read_outputs(out)
    assert table.column("id").to_pylist() == ids.tolist()
    np.testing.assert_allclose(
        table.column("score").to_numpy(), linear({"input": x})["score"], rtol=1e-6
    )
    with pytest.raises(BatchInputNotFound):
        plan(f"memory://bucket-{fmt}/missing.{fmt}", out)
