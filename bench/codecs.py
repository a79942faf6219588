"""Microbenchmark of the JSON route's codecs: decode + encode of one request, in µs.

    PYTHONPATH=src python bench/codecs.py

Measures a 98-float row against a float-matrix signature (the hot path of the
forest benchmark) and, when the code has table signatures, a 4-column mixed row.
"""

from __future__ import annotations

import timeit

import numpy as np
import orjson

from zeroserve.protocols import jsonproto
from zeroserve.types import Signature, TensorSpec

MATRIX = Signature(
    inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 98])],
    outputs=[
        TensorSpec(name="label", dtype="int64", shape=[-1]),
        TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2]),
    ],
)
BODY = orjson.dumps({"instances": [np.random.default_rng(0).random(98).tolist()]})
OUT = {"label": np.array([1]), "probabilities": np.array([[0.25, 0.75]], dtype=np.float32)}


def matrix_round() -> None:
    _arrays, rows = jsonproto.decode(jsonproto.load_json(BODY), MATRIX)
    jsonproto.encode(OUT, rows)


def table_round(sig: Signature, body: bytes) -> None:
    _arrays, rows = jsonproto.decode(jsonproto.load_json(body), sig)
    jsonproto.encode(OUT, rows, sig)


def best(fn: object, number: int = 20_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


if __name__ == "__main__":
    print(f"98-float row, matrix signature: {best(matrix_round):.1f} us decode+encode")
    try:
        from zeroserve.types import ColumnSpec, ColumnType
    except ImportError:
        raise SystemExit(0) from None
    table = Signature(
        columns=[
            ColumnSpec(name="city", type=ColumnType.STRING),
            ColumnSpec(name="income", type=ColumnType.FLOAT, nullable=True),
            ColumnSpec(name="age", type=ColumnType.INT),
            ColumnSpec(name="score", type=ColumnType.FLOAT),
        ],
        outputs=MATRIX.outputs,
        classes=[0, 1],
    )
    row = orjson.dumps({"instances": [{"city": "rome", "income": None, "age": 30, "score": 0.5}]})
    print(f"4-column mixed row, table signature: {best(lambda: table_round(table, row)):.1f} us")
