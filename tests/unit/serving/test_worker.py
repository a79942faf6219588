"""The replica loop, in a thread, with a runtime that records its calls."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.polling import wait_for
from zeroserve.serving.messages import FrameError, reader, recv_frame, send_frame
from zeroserve.serving.worker import serve_replica
from zeroserve.types import Arrays


class RecordingRuntime:
    """Doubles its input; refuses any batch holding -1; the first call waits for a gate."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def predict(self, inputs: Arrays) -> Arrays:
        x = inputs["x"]
        if not self.calls:
            self.entered.set()
            self.gate.wait(10)
        self.calls.append(len(x))
        if (x == -1).any():
            raise ValueError("-1 is not allowed")
        return {"y": x * 2}


@pytest.fixture
def replica() -> Iterator[tuple[socket.socket, RecordingRuntime, str, threading.Thread]]:
    owner, theirs = socket.socketpair()
    runtime = RecordingRuntime()
    thread = threading.Thread(target=serve_replica, args=(theirs, runtime), daemon=True)
    thread.start()
    meta, _ = recv_frame(reader(owner))
    assert meta["op"] == "ready"
    yield owner, runtime, meta["address"], thread
    runtime.gate.set()
    owner.close()
    thread.join(5)


def dial(address: str) -> tuple[socket.socket, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    stream = reader(sock)
    assert recv_frame(stream)[0]["op"] == "ready"
    return sock, stream


def rows(*values: float) -> Arrays:
    return {"x": np.array([[v, v] for v in values], dtype=np.float32)}


def test_batches_from_different_channels_are_predicted_together(replica: Any) -> None:
    owner, runtime, address, _ = replica
    other, other_stream = dial(address)
    owner_stream = reader(owner)
    send_frame(owner, {"op": "predict", "id": 1}, rows(1.0))  # holds the replica at the gate
    assert runtime.entered.wait(5)
    send_frame(owner, {"op": "predict", "id": 2}, rows(2.0, 3.0))
    send_frame(other, {"op": "predict", "id": 9}, rows(4.0))
    runtime.gate.set()
    first = recv_frame(owner_stream)
    second = recv_frame(owner_stream)
    third = recv_frame(other_stream)
    assert [m["id"] for m, _ in (first, second, third)] == [1, 2, 9]
    np.testing.assert_array_equal(second[1]["y"], rows(2.0, 3.0)["x"] * 2)
    np.testing.assert_array_equal(third[1]["y"], rows(4.0)["x"] * 2)
    assert runtime.calls == [1, 3]  # the two waiting batches in one call
    assert second[0]["compute_s"] > 0 and third[0]["compute_s"] > 0
    other.close()


def test_a_bad_batch_fails_alone_when_merged(replica: Any) -> None:
    owner, runtime, address, _ = replica
    other, other_stream = dial(address)
    owner_stream = reader(owner)
    send_frame(owner, {"op": "predict", "id": 1}, rows(1.0))
    assert runtime.entered.wait(5)
    send_frame(owner, {"op": "predict", "id": 2}, rows(-1.0))
    send_frame(other, {"op": "predict", "id": 3}, rows(5.0))
    runtime.gate.set()
    assert recv_frame(owner_stream)[0]["op"] == "result"
    bad = recv_frame(owner_stream)[0]
    good, outputs = recv_frame(other_stream)
    assert bad["op"] == "error" and "-1 is not allowed" in bad["message"]
    assert good["op"] == "result"
    np.testing.assert_array_equal(outputs["y"], rows(5.0)["x"] * 2)
    other.close()


def test_replica_stops_listening_when_its_owner_leaves_and_exits_after_the_rest(
    replica: Any,
) -> None:
    owner, runtime, address, thread = replica
    runtime.gate.set()
    other, other_stream = dial(address)
    owner.close()

    def refuses_channels() -> bool:
        try:
            late, _ = dial(address)
        except (OSError, FrameError):  # refused, or reset while in the closing backlog
            return True
        late.close()
        return False

    wait_for(refuses_channels, 20, "the replica to see its owner leave", interval_s=0.01)
    with pytest.raises(OSError):
        dial(address)  # no new channels once the owner is gone
    send_frame(other, {"op": "predict", "id": 4}, rows(6.0))  # the rest still get answers
    _, outputs = recv_frame(other_stream)
    np.testing.assert_array_equal(outputs["y"], rows(6.0)["x"] * 2)
    assert thread.is_alive()
    other.close()
    thread.join(5)
    assert not thread.is_alive()
