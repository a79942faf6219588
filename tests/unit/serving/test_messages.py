import socket
import threading

import numpy as np

from zeroserve.serving.messages import FrameParser, decode, encode, reader, recv_frame, send_frame


def test_round_trip_keeps_dtypes_shapes_and_values() -> None:
    arrays = {
        "x": np.arange(12, dtype=np.float32).reshape(3, 4),
        "ids": np.array([1, 2, 3], dtype=np.int64),
        "labels": np.array(["fraud", "ok", "ok"]),
        "empty": np.zeros((0, 4), dtype=np.float64),
        "strided": np.arange(20, dtype=np.float64).reshape(4, 5)[:, ::2],
    }
    a, b = socket.socketpair()
    with a, b:
        thread = threading.Thread(target=send_frame, args=(a, {"op": "x", "id": 7}, arrays))
        thread.start()
        meta, got = recv_frame(reader(b))
        thread.join()
    assert meta == {"op": "x", "id": 7}
    for name, arr in arrays.items():
        assert got[name].dtype == arr.dtype, name
        np.testing.assert_array_equal(got[name], arr)


def test_arrays_travel_as_raw_buffers_not_json() -> None:
    x = np.random.default_rng(0).random((256, 98)).astype(np.float32)
    parts = encode({"op": "predict", "id": 1}, {"input": x})
    assert len(parts) == 2
    assert memoryview(parts[1]).nbytes == x.nbytes  # the array's own memory, no copy
    head = bytes(parts[0])
    assert len(head) < 200
    _, arrays = decode(head[16:], [bytearray(parts[1])])
    np.testing.assert_array_equal(arrays["input"], x)


def test_parser_cuts_frames_however_the_bytes_arrive() -> None:
    frames = [
        ({"op": "predict", "id": i}, {"input": np.full((i + 1, 3), i, dtype=np.float32)})
        for i in range(4)
    ]
    stream = b"".join(b"".join(bytes(p) for p in encode(m, a)) for m, a in frames)
    for chunk in (1, 7, 64, len(stream)):
        parser = FrameParser()
        got = []
        for start in range(0, len(stream), chunk):
            got.extend(parser.feed(stream[start : start + chunk]))
        assert [m for m, _ in got] == [m for m, _ in frames]
        for (_, arrays), (_, want) in zip(got, frames, strict=True):
            np.testing.assert_array_equal(arrays["input"], want["input"])
