"""Nobody without the pool's key runs code on it; encryption is real when asked for.

A raw zmq client that knows every port of the controller (as anyone on the machine
could learn them) sends ``execute_request`` messages straight to an engine through
the controller's MUX and task sockets: unsigned, and signed with a wrong key. Nothing
executes, and the pool keeps working. ``encrypt = true`` turns on CurveZMQ: the
engines still register and run tasks, messages stay signed (the key is not dropped,
as ipyparallel does by default under CurveZMQ), and a plaintext socket gets no answer.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from jupyter_client.session import Session

import pxpool

pytestmark = pytest.mark.integration
SILENCE_SECONDS = 1.5  # how long a forged request gets to (not) run


def connection(pool: pxpool.Pool, side: str) -> dict[str, Any]:
    folder = Path(pool.core.cluster.profile_dir) / "security"  # type: ignore[union-attr]
    (path,) = folder.glob(f"ipcontroller-*-{side}.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2) as started:
        yield started


def forge(pool: pxpool.Pool, key: bytes, marker: Path, socket_name: str) -> None:
    """Send an execute_request that would create ``marker``, signed with ``key``."""
    code = f"open({str(marker)!r}, 'w').write('ran')"
    send_raw(pool, key, socket_name, "execute_request", {"code": code, "silent": False})
    time.sleep(SILENCE_SECONDS)


def send_raw(
    pool: pxpool.Pool, key: bytes, socket_name: str, msg_type: str, content: dict[str, Any]
) -> None:
    """A message to engine 0 through the controller's ``socket_name`` port, signed with
    ``key`` (unsigned when empty)."""
    info = connection(pool, "client")
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 1000
    socket.connect(f"{info['interface']}:{info[socket_name]}")
    try:
        session = Session(key=key, signature_scheme="hmac-sha256", username="intruder")
        idents = [] if socket_name == "task" else [pool.core.engine_uuids()[0].encode()]
        session.send(socket, msg_type, content=content, ident=idents)
    finally:
        socket.close()


def test_every_pool_has_its_own_non_empty_message_key(pool: pxpool.Pool) -> None:
    key = connection(pool, "client")["key"]
    assert len(key.replace("-", "")) >= 32
    assert connection(pool, "engine")["key"] == key
    assert connection(pool, "client")["signature_scheme"] == "hmac-sha256"


@pytest.mark.parametrize("socket_name", ["mux", "task"])
@pytest.mark.parametrize("key", [b"", b"not-the-pool-key"], ids=["unsigned", "wrong-key"])
def test_forged_execute_request_runs_nothing(
    pool: pxpool.Pool, tmp_path: Path, key: bytes, socket_name: str
) -> None:
    marker = tmp_path / "forged-request-ran"
    forge(pool, key, marker, socket_name)
    assert not marker.exists()
    assert pool.view().apply_sync(lambda: "still working") == ["still working"] * 2


def test_correctly_signed_request_through_the_same_path_does_run(
    pool: pxpool.Pool, tmp_path: Path
) -> None:
    """The control case: the forged requests fail for their signature, not their shape."""
    marker = tmp_path / "signed-request-ran"
    forge(pool, connection(pool, "client")["key"].encode(), marker, "mux")
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("key", [b"", b"not-the-pool-key"], ids=["unsigned", "wrong-key"])
def test_forged_signal_request_interrupts_nothing(pool: pxpool.Pool, key: bytes) -> None:
    """The control port reaches each engine's nanny, which sends signals: it sends
    none for a request without the pool's signature."""
    running = pool.client[0].apply_async(time.sleep, 2 * SILENCE_SECONDS)
    time.sleep(0.3)
    send_raw(pool, key, "control", "signal_request", {"sig": "SIGINT"})
    assert running.get(timeout=30) is None  # slept to the end: no KeyboardInterrupt
    assert pool.view().apply_sync(lambda: "still working") == ["still working"] * 2


def test_correctly_signed_signal_request_through_the_control_port_interrupts(
    pool: pxpool.Pool,
) -> None:
    running = pool.client[0].apply_async(time.sleep, 30)
    time.sleep(0.3)
    send_raw(
        pool,
        connection(pool, "client")["key"].encode(),
        "control",
        "signal_request",
        {"sig": "SIGINT"},
    )
    with pytest.raises(Exception, match="KeyboardInterrupt"):
        running.get(timeout=10)


def test_encrypted_pool_runs_tasks_signs_messages_and_ignores_plaintext(tmp_path: Path) -> None:
    with pxpool.Pool.from_profile("local", engines=2, encrypt=True) as pool:
        info = connection(pool, "client")
        assert info["curve_serverkey"], "the client connection file names the server key"
        assert connection(pool, "engine")["curve_serverkey"] == info["curve_serverkey"]
        assert len(info["key"]) >= 32, "messages stay HMAC-signed under CurveZMQ"
        assert pool.view().apply_sync(lambda: 6 * 7) == [42, 42]
        assert pool.map(lambda x: x + 1, range(5)) == [1, 2, 3, 4, 5]

        # a plaintext socket cannot even complete a handshake with the registration port
        socket = zmq.Context.instance().socket(zmq.DEALER)
        socket.linger = 0
        socket.connect(f"{info['interface']}:{info['registration']}")
        try:
            Session(key=info["key"].encode()).send(socket, "connection_request", content={})
            assert socket.poll(int(SILENCE_SECONDS * 1000)) == 0
        finally:
            socket.close()
        marker = tmp_path / "plaintext-request-ran"
        forge(pool, info["key"].encode(), marker, "mux")  # right key, but no encryption
        assert not marker.exists()
        assert pool.view().apply_sync(lambda: "still working") == ["still working"] * 2

        # the engines' nannies talk CurveZMQ too: an interrupt reaches the engine, and
        # an engine's death reaches the hub at once (not after missed heartbeats)
        running = pool.client[1].apply_async(time.sleep, 30)
        time.sleep(0.3)
        pool.client.send_signal("SIGINT", targets=[1], block=True)
        with pytest.raises(Exception, match="KeyboardInterrupt"):
            running.get(timeout=10)
        pid = pool.client[1].apply_sync(os.getpid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while 1 in pool.client.ids and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.client.ids == [0]
