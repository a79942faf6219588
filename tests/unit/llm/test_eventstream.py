"""Our AWS event-stream encoder is read by botocore's own parser, and our decoder agrees."""

from __future__ import annotations

import orjson
import pytest
from botocore.eventstream import EventStreamBuffer

from zeroserve.llm.eventstream import EventStreamDecoder, EventStreamError, event, exception


def test_botocore_reads_our_frames() -> None:
    frames = event("metadata", orjson.dumps({"usage": {"inputTokens": 3}})) + exception(
        "throttlingException", b'{"message":"slow"}'
    )
    buf = EventStreamBuffer()
    buf.add_data(frames)
    messages = list(buf)
    assert [
        m.headers[":event-type"] if ":event-type" in m.headers else m.headers[":exception-type"]
        for m in messages
    ] == ["metadata", "throttlingException"]
    assert orjson.loads(messages[0].payload) == {"usage": {"inputTokens": 3}}
    assert messages[1].headers[":message-type"] == "exception"


def test_decoder_round_trip_in_pieces() -> None:
    frames = event("messageStart", b'{"role":"assistant"}') + event(
        "contentBlockDelta", b'{"delta":{"text":"hi"}}'
    )
    dec = EventStreamDecoder()
    got = []
    for i in range(0, len(frames), 7):  # arbitrary chunking, as TCP would
        got.extend(dec.feed(frames[i : i + 7]))
    assert [(h[":event-type"], p) for h, p in got] == [
        ("messageStart", b'{"role":"assistant"}'),
        ("contentBlockDelta", b'{"delta":{"text":"hi"}}'),
    ]
    assert dec.pending == 0


def test_decoder_rejects_a_corrupt_frame() -> None:
    frame = bytearray(event("metadata", b"{}"))
    frame[-6] ^= 0xFF
    with pytest.raises(EventStreamError):
        list(EventStreamDecoder().feed(bytes(frame)))
