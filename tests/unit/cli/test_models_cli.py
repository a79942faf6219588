"""`zeroserve models register` mistakes: one line, exit 1, no traceback (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from zeroserve.cli.main import run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere/model.skops"], "nowhere/model.skops is not a file or a model directory"),
        (["{model}", "--sample", "missing.npy"], "sample missing.npy is not a file"),
        (["{model}", "--signature", "{bad}"], "is not a valid signature: inputs: Input should"),
        (["{model}", "--signature", "nope.json"], "signature nope.json is not a file"),
    ],
)
def test_register_mistakes_are_one_line(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.skops"
    model.write_bytes(b"x")
    bad = tmp_path / "sig.json"
    bad.write_text('{"inputs": "not a list"}')
    argv = ["models", "register", *[a.format(model=model, bad=bad) for a in args], "--name", "m"]
    assert run(argv) == 1
    output = capsys.readouterr().err.strip()
    assert message in output and "Traceback" not in output
    assert len(output.splitlines()) == 1, output
