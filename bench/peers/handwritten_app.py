"""A minimal hand-written inference server: what a user could write in an afternoon.

    BENCH_MODEL_PATH=model.onnx uvicorn handwritten_app:app --workers 2

POST {"instances": [[...], ...]} to /predict; answers {"predictions": [...]}.
BENCH_FLAVOR=sklearn serves a joblib scikit-learn model instead of ONNX.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Predict = Callable[[np.ndarray], np.ndarray]


def load_onnx(path: str) -> Predict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread per worker: two workers already fill two cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    label_name = session.get_outputs()[0].name

    def predict(rows: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([label_name], {input_name: rows})[0])

    return predict


def load_sklearn(path: str) -> Predict:
    import joblib

    model = joblib.load(path)
    return lambda rows: np.asarray(model.predict(rows))


LOADERS = {"onnx": load_onnx, "sklearn": load_sklearn}
predict = LOADERS[os.environ.get("BENCH_FLAVOR", "onnx")](os.environ["BENCH_MODEL_PATH"])


async def invocations(request: Request) -> JSONResponse:
    payload = await request.json()
    rows = np.asarray(payload["instances"], dtype=np.float32)
    return JSONResponse({"predictions": predict(rows).tolist()})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/predict", invocations, methods=["POST"]), Route("/health", health)])
