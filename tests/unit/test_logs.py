import json
import logging

from zeroserve.logs import JsonFormatter, TextFormatter


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("zeroserve.pool", logging.WARNING, "x.py", 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_text_event_is_one_line_with_quoted_values() -> None:
    line = TextFormatter().format(
        record(
            "replica died",
            endpoint="fraud",
            pid=123,
            how="was killed by signal 9 (SIGKILL)\nafter 3 s",
            ports=[1, 2],
        )
    )
    assert "\n" not in line
    assert "replica died endpoint=fraud pid=123 " in line
    assert 'how="was killed by signal 9 (SIGKILL)\\nafter 3 s"' in line
    assert "ports=[1,2]" in line


def test_text_message_newlines_are_escaped() -> None:
    line = TextFormatter().format(record("model raised\nValueError: bad"))
    assert "\n" not in line and "model raised\\nValueError: bad" in line


def test_json_event_is_one_object_per_line() -> None:
    line = JsonFormatter().format(record("endpoint deployed", endpoint="fraud", serves="v 2"))
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "endpoint deployed"
    assert data["endpoint"] == "fraud" and data["serves"] == "v 2"
    assert data["level"] == "warning"
