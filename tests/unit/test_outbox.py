"""The lane agent's outbox on real zmq sockets: held replies leave together, in order,
one message per client, and none waits longer than its limits allow."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from pxpool._entry.signing import FrameSigner
from pxpool._tasks import outbox as outbox_module
from pxpool._tasks import wire
from pxpool._tasks.outbox import Outbox

KEY = b"o" * 32
WAIT_MS = 10_000  # a reply that should come comes within this


@pytest.fixture
def sockets() -> Iterator[tuple[zmq.Socket[bytes], list[zmq.Socket[bytes]]]]:
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealers = []
    for number in range(2):
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(str(number).encode())
        dealers.append(dealer)
    try:
        yield router, dealers
    finally:
        for sock in [router, *dealers]:
            sock.close(linger=0)


def _idents(router: zmq.Socket[bytes]) -> list[bytes]:
    """The dealers' identities, in the fixture's order (each sent its number)."""
    idents: dict[bytes, bytes] = {}
    for _ in range(2):
        assert router.poll(WAIT_MS)
        ident, number = router.recv_multipart()
        idents[number] = ident
    return [idents[b"0"], idents[b"1"]]


def _message(dealer: zmq.Socket[bytes], wait_ms: int = WAIT_MS) -> dict[str, Any] | None:
    if not dealer.poll(wait_ms):
        return None
    unpacked = wire.unpack(FrameSigner(KEY), dealer.recv_multipart())
    assert not isinstance(unpacked, str), unpacked
    header, parts = unpacked
    header["parts"] = [bytes(p) for p in parts]
    return header


def test_held_replies_leave_together_in_order_one_message_per_client(
    sockets: tuple[zmq.Socket[bytes], list[zmq.Socket[bytes]]],
) -> None:
    router, (first, second) = sockets
    a, b = _idents(router)
    box = Outbox(router, FrameSigner(KEY), 3, max_wait=30.0)  # only a notice sends here
    box.reply(a, [1, wire.OK, 1, 0.0], [b"one"], hold=True)
    box.reply(b, [7, wire.OK, 0, 0.0], [], ["printed\n", ""], hold=True)
    box.reply(a, [2, wire.OK, 1, 0.0], [b"two"], hold=True)
    assert first.poll(50) == 0  # held: nothing sent yet
    box.reply(a, [3, wire.STARTED, 0, 0.0], [])  # a notice is never held: all go now
    got = _message(first)
    assert got is not None and got["e"] == 3
    assert [r[0] for r in got["r"]] == [1, 2, 3] and got["parts"] == [b"one", b"two"]
    other = _message(second)
    assert other is not None and other["r"] == [[7, wire.OK, 0, 0.0]]
    assert other["p"] == {"7": ["printed\n", ""]}
    assert box.messages == 2
    box.close()


def test_a_full_outbox_and_an_old_reply_send_without_a_flush(
    sockets: tuple[zmq.Socket[bytes], list[zmq.Socket[bytes]]],
) -> None:
    router, (first, _) = sockets
    a, _ = _idents(router)
    box = Outbox(router, FrameSigner(KEY), 0, max_wait=30.0)  # only the count limit acts here
    for x in range(outbox_module.MAX_HELD):
        box.reply(a, [x, wire.OK, 0, 0.0], [], hold=True)
    got = _message(first)
    assert got is not None and len(got["r"]) == outbox_module.MAX_HELD
    box.close()
    box = Outbox(router, FrameSigner(KEY), 0, max_wait=0.05)
    box.reply(a, [100, wire.OK, 0, 0.0], [], hold=True)
    # nobody flushes: the watch thread sends it once it is HOLD old
    began = time.monotonic()
    got = _message(first)
    assert got is not None and got["r"][0][0] == 100
    assert time.monotonic() - began < 5.0
    box.flush()  # nothing held: sends nothing
    assert first.poll(100) == 0 and box.messages == 1
    box.close()
    assert "pxpool-lane-outbox" not in {t.name for t in threading.enumerate()}


def test_a_handed_off_reply_leaves_from_the_watch_thread_at_once_and_copied(
    sockets: tuple[zmq.Socket[bytes], list[zmq.Socket[bytes]]],
) -> None:
    """A handed-off reply does not wait for ``max_wait`` nor for a flush (the main
    thread is running the next task), and its parts are the bytes they were when it
    was handed off. Control: a held reply under the same ``max_wait`` stays."""
    router, (first, _) = sockets
    a, _ = _idents(router)
    box = Outbox(router, FrameSigner(KEY), 0, max_wait=30.0)
    box.reply(a, [1, wire.OK, 1, 0.0], [b"held"], hold=True)
    assert first.poll(100) == 0  # held: 30 s to go
    result = bytearray(b"as returned")
    box.reply(a, [2, wire.OK, 1, 0.002], [memoryview(result)], hand_off=True)
    result[:] = b"changed!!!!"  # the next task changes it in place
    got = _message(first)
    assert got is not None and [r[0] for r in got["r"]] == [1, 2]  # in order, together
    assert got["parts"] == [b"held", b"as returned"]
    assert box.handed == 1 and box.messages == 1
    box.close()
    assert "pxpool-lane-outbox" not in {t.name for t in threading.enumerate()}
