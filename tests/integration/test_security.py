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
    folder = Path(pool._cluster.profile_dir) / "security"  # type: ignore[union-attr]
    (path,) = folder.glob(f"ipcontroller-*-{side}.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2) as started:
        yield started


def forge(pool: pxpool.Pool, key: bytes, marker: Path, socket_name: str) -> None:
    """Send an execute_request that would create ``marker``, signed with ``key``."""
    info = connection(pool, "client")
    context = zmq.Context.instance()
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.connect(f"{info['interface']}:{info[socket_name]}")
    try:
        session = Session(key=key, signature_scheme="hmac-sha256", username="intruder")
        code = f"open({str(marker)!r}, 'w').write('ran')"
        idents = [pool.client._engines[0].encode()] if socket_name == "mux" else []
        session.send(
            socket, "execute_request", content={"code": code, "silent": False}, ident=idents
        )
        time.sleep(SILENCE_SECONDS)
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
