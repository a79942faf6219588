"""The demo's second act: a mixed-type pipeline served by column name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table


def train_pipeline(workdir: Path) -> Any:
    """A ColumnTransformer + OneHotEncoder pipeline over string, float and int columns."""
    import pandas as pd
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 5_000
    frame = pd.DataFrame(
        {
            "country": rng.choice(["fr", "de", "it", "us"], n),
            "amount": rng.lognormal(3, 1, n),
            "hour": rng.integers(0, 24, n),
        }
    )
    fraud = (frame["country"] == "us") & (frame["amount"] > 40) | (frame["hour"] < 4)
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                ("country", OneHotEncoder(handle_unknown="ignore"), ["country"]),
                ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["amount", "hour"]),
            ]
        ),
        LogisticRegression(),
    ).fit(frame, np.where(fraud, "fraud", "ok"))
    sio.dump(pipeline, workdir / "payments.skops")
    return pipeline


def serve_by_column(client: httpx.Client, workdir: Path, console: Console) -> None:
    """Register, deploy, and invoke with rows keyed by column name; compare with predict()."""
    import pandas as pd

    pipeline = train_pipeline(workdir)
    with (workdir / "payments.skops").open("rb") as fh:
        response = client.post(
            "/api/models/payments/versions", files={"file": ("payments.skops", fh)}
        )
    response.raise_for_status()
    signature = response.json()["signature"]
    client.post("/api/deploy", json={"model": "payments"}).raise_for_status()
    rows = [
        {"amount": 900.0, "country": "us", "hour": 2},
        {"hour": 2, "country": "fr", "amount": 8.5},
        {"country": "de", "amount": None, "hour": 11},  # a null: the imputer fills it
    ]
    answer = client.post("/v1/endpoints/payments/invocations", json={"instances": rows})
    answer.raise_for_status()
    served = answer.json()
    frame = pd.DataFrame(rows, columns=["country", "amount", "hour"]).astype({"amount": float})
    want = pipeline.predict(frame).tolist()
    table = Table(title="payments: a mixed-type pipeline served by column name")
    for col in ("row (keys in any order)", "served label", "P(fraud)", "predict()"):
        table.add_column(col)
    fraud_at = served["classes"].index("fraud")
    for row, got, expected in zip(rows, served["predictions"], want, strict=True):
        table.add_row(str(row), got["label"], f"{got['probabilities'][fraud_at]:.3f}", expected)
    console.print(table)
    columns = ", ".join(
        f"{c['name']}: {c['type']}{' (nullable)' if c['nullable'] else ''}"
        for c in signature["columns"]
    )
    same = [p["label"] for p in served["predictions"]] == want
    console.print(f"inferred columns: {columns}; labels equal predict(): {same}")
