"""Nobody without the pool's key runs code on it; encryption is real when asked for.

A raw zmq client that knows every port of the controller (as anyone on the machine
could learn them) sends messages to engine 0 through the controller's MUX, task and
control ports: unsigned, and signed with a wrong key. None of them has an effect. No
test waits a fixed time for nothing to happen: after the forged message the same
socket sends a barrier, a harmless message signed with the pool's key that takes the
same path to the same engine, and the test waits (bounded) for the barrier's reply.
Each hop handles one socket's messages in order, so once that reply is back the forged
message has been dealt with, and its side effect (a file it writes, an interrupt)
would be there. Each port also has its positive control: the same message signed with
the pool's key does have its effect, so the forged ones fail for their signature, not
their shape.

``encrypt = true`` turns on CurveZMQ: the engines still register and run tasks,
messages stay signed (the key is not dropped, as ipyparallel does by default under
CurveZMQ), a plaintext socket's handshake is refused, and the same signed message over
CurveZMQ does run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.utils.monitor
from jupyter_client.session import Session

import pxpool

from .waits import wait_until

pytestmark = pytest.mark.integration
REPLY_TIMEOUT = 30.0  # seconds for a barrier's reply (it comes in milliseconds)
SEND_TIMEOUT_MS = 500
SOCKETS = ["mux", "task"]  # the ports that reach an engine's shell
KEYS = [pytest.param(b"", id="unsigned"), pytest.param(b"not-the-pool-key", id="wrong-key")]


def connection(pool: pxpool.Pool, side: str) -> dict[str, Any]:
    folder = Path(pool.core.cluster.profile_dir) / "security"  # type: ignore[union-attr]
    (path,) = folder.glob(f"ipcontroller-*-{side}.json")
    return json.loads(path.read_text())


def pool_key(pool: pxpool.Pool) -> bytes:
    return str(connection(pool, "client")["key"]).encode()


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2) as started:
        yield started


class Port:
    """One raw DEALER socket to a controller port, sending to engine 0: through ``mux``
    and ``control`` addressed to its uuid, through ``task`` with engine 0 as the only
    target (so a forged task and the barrier after it would meet on the same engine)."""

    def __init__(self, pool: pxpool.Pool, name: str, curve: bool = False) -> None:
        info = connection(pool, "client")
        self.name = name
        self.key = pool_key(pool)
        self.engine = pool.core.engine_uuids()[0]
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.sndtimeo = SEND_TIMEOUT_MS  # a send with no connection to queue on fails
        if curve:  # a client of an encrypted pool: the server's key, a key pair of its own
            public, secret = zmq.curve_keypair()
            self.socket.curve_serverkey = info["curve_serverkey"].encode()
            self.socket.curve_publickey, self.socket.curve_secretkey = public, secret
        self.monitor = self.socket.get_monitor_socket()
        self.socket.connect(f"{info['interface']}:{info[name]}")

    def send(self, key: bytes, msg_type: str, content: dict[str, Any]) -> str:
        """Send a message signed with ``key`` (unsigned when empty); its msg_id."""
        session = Session(key=key, signature_scheme="hmac-sha256", username="intruder")
        idents = [] if self.name == "task" else [self.engine.encode()]
        metadata = {"targets": [self.engine]} if self.name == "task" else {}
        sent = session.send(self.socket, msg_type, content, ident=idents, metadata=metadata)
        return str(sent["header"]["msg_id"])

    def reply(self, msg_id: str, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        """The reply to ``msg_id`` (verified with the pool's key); replies to other
        messages that come first are passed over."""
        session = Session(key=self.key, signature_scheme="hmac-sha256")
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1):
                _, msg = session.recv(self.socket, mode=0)
                if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
                    return dict(msg)
        raise AssertionError(f"no reply to {msg_id} through the {self.name} port in {timeout:g}s")

    def barrier(self) -> None:
        """A harmless message signed with the pool's key, along the same path to engine
        0, and its reply: whatever was sent before it on this socket has been handled."""
        if self.name == "control":
            msg_type, content = "signal_request", {"sig": 0}  # kill(pid, 0): no signal
        else:
            msg_type, content = "execute_request", {"code": "pass", "silent": False}
        reply = self.reply(self.send(self.key, msg_type, content))
        assert reply["content"]["status"] == "ok", reply["content"]

    def handshake(self, timeout: float = REPLY_TIMEOUT) -> int:
        """The first handshake event of the connection (succeeded or failed)."""
        return self._event({zmq.EVENT_HANDSHAKE_SUCCEEDED, *HANDSHAKE_FAILED}, timeout)

    def refused(self, tries: int = 3, timeout: float = REPLY_TIMEOUT) -> None:
        """Wait until the server has refused this socket's handshake ``tries`` times (it
        retries after each), or once with a protocol error (after which libzmq gives the
        connection up); a handshake that succeeds fails the test."""
        final = {zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH}
        for _ in range(tries):
            event = self._event({zmq.EVENT_HANDSHAKE_SUCCEEDED, *HANDSHAKE_FAILED}, timeout)
            assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, f"a handshake on the {self.name} port"
            if event in final:
                return

    def _event(self, wanted: set[int], timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.monitor.poll(int(left * 1000) + 1):
                event = int(zmq.utils.monitor.recv_monitor_message(self.monitor)["event"])
                if event in wanted:
                    return event
        raise AssertionError(f"no handshake event on the {self.name} port within {timeout:g}s")

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close()
        self.socket.close()


HANDSHAKE_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
}


@pytest.fixture
def port(pool: pxpool.Pool, request: pytest.FixtureRequest) -> Iterator[Port]:
    opened = Port(pool, request.param)
    yield opened
    opened.close()


def write_marker(marker: Path) -> dict[str, Any]:
    """An execute_request whose code creates ``marker``."""
    return {"code": f"open({str(marker)!r}, 'w').write('ran')", "silent": False}


def test_every_pool_has_its_own_non_empty_message_key(pool: pxpool.Pool) -> None:
    key = connection(pool, "client")["key"]
    assert len(key.replace("-", "")) >= 32
    assert connection(pool, "engine")["key"] == key
    assert connection(pool, "client")["signature_scheme"] == "hmac-sha256"


@pytest.mark.parametrize("port", SOCKETS, indirect=True)
@pytest.mark.parametrize("key", KEYS)
def test_forged_execute_request_runs_nothing(
    pool: pxpool.Pool, port: Port, tmp_path: Path, key: bytes
) -> None:
    marker = tmp_path / "forged-request-ran"
    port.send(key, "execute_request", write_marker(marker))
    port.barrier()
    assert not marker.exists()
    assert pool.view().apply_sync(lambda: "still working") == ["still working"] * 2


@pytest.mark.parametrize("port", SOCKETS, indirect=True)
def test_correctly_signed_execute_request_through_the_same_port_does_run(
    port: Port, tmp_path: Path
) -> None:
    """The positive control: the forged requests fail for their signature, not their
    shape or their path."""
    marker = tmp_path / "signed-request-ran"
    msg_id = port.send(port.key, "execute_request", write_marker(marker))
    assert port.reply(msg_id)["content"]["status"] == "ok"
    port.barrier()
    assert marker.read_text() == "ran"


def wait_for_release(started: str, release: str, limit: float) -> str:
    """Runs on engine 0: says it started, then waits for ``release`` to exist;
    "interrupted" if a KeyboardInterrupt (SIGINT) came first."""
    import os
    import time

    deadline = time.monotonic() + limit
    try:
        open(started, "w").close()
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
    except KeyboardInterrupt:
        return "interrupted"
    return "released" if os.path.exists(release) else "timed out"


def interrupt_test(pool: pxpool.Pool, tmp_path: Path, key: bytes) -> str:
    """Engine 0 waits for a release; a signal_request for SIGINT signed with ``key``
    goes to its nanny through the control port, then the barrier; then the release.
    A SIGINT the nanny sent is pending in the engine before the release file exists,
    so the engine's answer says whether one was sent."""
    started, release = tmp_path / "started", tmp_path / "release"
    waiting = pool.client[0].apply_async(wait_for_release, str(started), str(release), 60.0)
    wait_until(started.exists, REPLY_TIMEOUT, "engine 0 starting its task")
    port = Port(pool, "control")
    try:
        port.send(key, "signal_request", {"sig": "SIGINT"})
        port.barrier()
    finally:
        port.close()
        release.touch()
    return str(waiting.get(timeout=REPLY_TIMEOUT))


@pytest.mark.parametrize("key", KEYS)
def test_forged_signal_request_interrupts_nothing(
    pool: pxpool.Pool, tmp_path: Path, key: bytes
) -> None:
    """The control port reaches each engine's nanny, which sends signals: it sends
    none for a request without the pool's signature."""
    assert interrupt_test(pool, tmp_path, key) == "released"
    assert pool.view().apply_sync(lambda: "still working") == ["still working"] * 2


def test_correctly_signed_signal_request_through_the_control_port_interrupts(
    pool: pxpool.Pool, tmp_path: Path
) -> None:
    assert interrupt_test(pool, tmp_path, pool_key(pool)) == "interrupted"


def test_encrypted_pool_runs_tasks_signs_messages_and_refuses_plaintext(tmp_path: Path) -> None:
    with pxpool.Pool.from_profile("local", engines=2, encrypt=True) as pool:
        info = connection(pool, "client")
        assert info["curve_serverkey"], "the client connection file names the server key"
        assert connection(pool, "engine")["curve_serverkey"] == info["curve_serverkey"]
        assert len(info["key"]) >= 32, "messages stay HMAC-signed under CurveZMQ"
        assert pool.view().apply_sync(lambda: 6 * 7) == [42, 42]
        assert pool.map(lambda x: x + 1, range(5)) == [1, 2, 3, 4, 5]

        # a plaintext socket's handshake with the registration or MUX port is refused, on
        # every retry, until libzmq gives the connection up: a request signed with the
        # right key, queued on it, never passes (messages flow only after a handshake) ...
        marker = tmp_path / "plaintext-request-ran"
        for name in ("registration", "mux"):
            plain = Port(pool, name)
            try:
                with contextlib.suppress(zmq.Again):  # the connection may be gone already
                    plain.send(plain.key, "execute_request", write_marker(marker))
                plain.refused()
            finally:
                plain.close()
        # ... while the same request over CurveZMQ, through the same port, does run
        encrypted = Port(pool, "mux", curve=True)
        try:
            assert encrypted.handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
            encrypted.barrier()
            assert not marker.exists()
            msg_id = encrypted.send(encrypted.key, "execute_request", write_marker(marker))
            assert encrypted.reply(msg_id)["content"]["status"] == "ok"
        finally:
            encrypted.close()
        assert marker.read_text() == "ran"
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
