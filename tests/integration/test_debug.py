"""Remote debugging through real engines: post-mortem, breakpoint(), timeouts, refusal."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

import pxpool
from pxpool._debug import agent as debug_agent
from pxpool._debug.session import request
from pxpool._debug.wire import SignedConn, sign
from pxpool.errors import DebugAuthError, DebugError

from .debug_helpers import fails_with_local

pytestmark = pytest.mark.integration


def stops_at_breakpoint(x: int) -> int:
    y = x + 1
    breakpoint()
    z = y * 2
    return z


def ok() -> str:
    return "engine works"


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2) as started:
        yield started


@pytest.fixture
def short_timeout(pool: pxpool.Pool) -> Iterator[None]:
    before = pool.debug_timeout
    pool.debug_timeout = 1.0
    yield
    pool.debug_timeout = before


def test_nothing_to_debug_names_the_next_step(pool: pxpool.Pool) -> None:
    with pytest.raises(DebugError, match=r"Engine 0 has no failed task .*%%pxdebug -e 0"):
        pool.debug(0)


def test_post_mortem_opens_in_the_failing_frame_with_its_locals(pool: pxpool.Pool) -> None:
    with pytest.raises(Exception, match="bad input 6"):
        pool.view(1).apply_sync(fails_with_local, 6)
    with pool.debug(1) as session:
        assert session.kind == "postmortem"
        assert session.prompt == "(Pdb-e1) "
        assert "fails_with_local()" in session.intro
        assert 'raise ValueError(f"bad input {n} ({secret})")' in session.intro
        assert session.send("p secret").strip() == "42"
        assert session.send("p n").strip() == "6"
        assert "fails_with_local()" in session.send("w")
    assert session.ended
    assert pool.view(1).apply_sync(ok) == "engine works"


def test_debug_without_engine_picks_the_most_recent_failure(pool: pxpool.Pool) -> None:
    with pytest.raises(Exception, match="bad input 3"):
        pool.view(0).apply_sync(fails_with_local, 3)
    with pool.debug() as session:
        assert session.engine_id == 0
        assert session.send("p secret").strip() == "21"


def test_breakpoint_in_a_load_balanced_task_stops_and_continues_to_the_result(
    pool: pxpool.Pool,
) -> None:
    result = pool.lbview().apply_async(stops_at_breakpoint, 10)
    with pool.debug(wait=30) as session:
        assert session.kind == "breakpoint"
        assert session.prompt == f"(Pdb-e{session.engine_id}) "
        assert "-> z = y * 2" in session.intro
        assert session.send("p y").strip() == "11"
        assert "-> return z" in session.send("n")
        assert session.send("p z").strip() == "22"
        session.send("c")
        assert session.ended and (session.end_reason or "").startswith("continued")
    assert result.get(timeout=30) == 22


def test_breakpoint_without_a_session_continues_after_the_timeout(
    pool: pxpool.Pool, short_timeout: None
) -> None:
    started = time.monotonic()
    result = pool.lbview().apply_async(stops_at_breakpoint, 1)
    assert result.get(timeout=30) == 4
    assert time.monotonic() - started >= 1.0
    assert "no debugger attached within 1s; continuing" in result.stderr


def test_quit_ends_the_task_with_debugger_quit_and_the_engine_stays_usable(
    pool: pxpool.Pool,
) -> None:
    result = pool.view(0).apply_async(stops_at_breakpoint, 2)
    with pool.debug(0, wait=30) as session:
        session.send("q")
        assert session.ended and "DebuggerQuit" in (session.end_reason or "")
    with pytest.raises(Exception, match=r"DebuggerQuit.*engine 0 was quit at stops_at_breakpoint"):
        result.get(timeout=30)
    assert pool.view(0).apply_sync(ok) == "engine works"


# The security negatives forge a ``config`` request: of the requests an agent serves it
# is the one that leaves a mark on the engine (how long a stop waits for a client), so
# each test can show that the forged message ran nothing and that the same request,
# signed with the pool's key on its own connection, does run. Every check waits on the
# engine's answer or on its closing the connection, never on a fixed sleep.
FORGED_TIMEOUT = 4321.0
CONFIG = {"op": "config", "timeout": FORGED_TIMEOUT}


@pytest.fixture
def restores_debug_timeout(pool: pxpool.Pool) -> Iterator[float]:
    before = pool.debug_timeout
    assert before != FORGED_TIMEOUT
    yield before
    pool.debug_timeout = before


def agent_address(pool: pxpool.Pool, engine_id: int) -> tuple[str, int]:
    """Where engine ``engine_id``'s debugger listens, asked of the engine itself. These
    are local engines, which the client reaches at that address directly."""
    address = pool.view(engine_id).apply_sync(debug_agent.listening_address)
    assert address is not None, f"no debugger agent runs on engine {engine_id}"
    return str(address[0]), int(address[1])


def engine_pause_timeout(pool: pxpool.Pool, engine_id: int) -> float:
    """How long a stop on the engine waits for a client, as its agent holds it now."""
    return float(pool.view(engine_id).apply_sync(debug_agent.pause_timeout))


def signed_request(pool: pxpool.Pool, engine_id: int, body: dict[str, object]) -> dict[str, object]:
    """``body`` sent as the pool's own client sends it: signed with the pool's key."""
    host, port = agent_address(pool, engine_id)
    conn = SignedConn.connect(host, port, pool.client.session.key, 10)
    try:
        return request(conn, body)
    finally:
        conn.close()


def signed_line(key: bytes, body: dict[str, object]) -> bytes:
    text = json.dumps(body, separators=(",", ":"))
    return json.dumps({"body": text, "sig": sign(key, text)}).encode() + b"\n"


def test_unsigned_message_is_refused_and_runs_nothing(
    pool: pxpool.Pool, restores_debug_timeout: float
) -> None:
    host, port = agent_address(pool, 0)
    assert engine_pause_timeout(pool, 0) == restores_debug_timeout
    with socket.create_connection((host, port), timeout=10) as raw:
        reader = raw.makefile("rb")
        hello = json.loads(reader.readline())
        assert hello["hello"] == "pxpool-debug/1"
        raw.sendall(json.dumps(CONFIG).encode() + b"\n")
        assert "refused: unsigned message" in json.loads(reader.readline())["error"]
        assert reader.readline() == b""  # closed by the engine: done with the message
    assert engine_pause_timeout(pool, 0) == restores_debug_timeout
    assert signed_request(pool, 0, CONFIG) == {"ok": True}  # control: signed, it runs
    assert engine_pause_timeout(pool, 0) == FORGED_TIMEOUT
    assert pool.view(0).apply_sync(ok) == "engine works"


def test_wrong_key_is_refused_and_runs_nothing(
    pool: pxpool.Pool, restores_debug_timeout: float
) -> None:
    host, port = agent_address(pool, 1)
    assert engine_pause_timeout(pool, 1) == restores_debug_timeout
    conn = SignedConn.connect(host, port, b"not-the-pool-key", 10)
    try:
        with pytest.raises(DebugAuthError, match="refused: bad signature"):
            request(conn, CONFIG)
    finally:
        conn.close()
    assert engine_pause_timeout(pool, 1) == restores_debug_timeout
    assert signed_request(pool, 1, CONFIG) == {"ok": True}  # control: the pool's key
    assert engine_pause_timeout(pool, 1) == FORGED_TIMEOUT
    assert pool.view(1).apply_sync(ok) == "engine works"


def test_replayed_message_is_refused_on_its_own_and_another_connection(
    pool: pxpool.Pool, restores_debug_timeout: float
) -> None:
    host, port = agent_address(pool, 1)
    key = pool.client.session.key
    with socket.create_connection((host, port), timeout=10) as first:
        reader = first.makefile("rb")
        nonce = json.loads(reader.readline())["nonce"]
        line = signed_line(key, dict(CONFIG, nonce=nonce, seq=1, origin="client"))
        first.sendall(line)
        reply = json.loads(reader.readline())
        assert json.loads(reply["body"])["ok"] is True  # control: on its connection, it runs
        assert engine_pause_timeout(pool, 1) == FORGED_TIMEOUT
        pool.debug_timeout = restores_debug_timeout  # back, so a replay that ran would show
        assert engine_pause_timeout(pool, 1) == restores_debug_timeout

        first.sendall(line)  # the same message again, on the same connection
        assert "message out of order (seq 1)" in json.loads(reader.readline())["error"]
        assert reader.readline() == b""
    assert engine_pause_timeout(pool, 1) == restores_debug_timeout

    with socket.create_connection((host, port), timeout=10) as second:
        reader = second.makefile("rb")
        assert json.loads(reader.readline())["nonce"] != nonce
        second.sendall(line)  # the same message on a new connection
        assert "nonce or origin mismatch" in json.loads(reader.readline())["error"]
        assert reader.readline() == b""
    assert engine_pause_timeout(pool, 1) == restores_debug_timeout
    assert pool.view(1).apply_sync(ok) == "engine works"


def test_debug_timeout_must_be_positive(pool: pxpool.Pool) -> None:
    with pytest.raises(ValueError, match="debug_timeout must be a positive number"):
        pool.debug_timeout = 0


def test_an_ended_session_says_how_to_open_a_new_one(pool: pxpool.Pool) -> None:
    with pool.debug(1) as session:
        pass
    with pytest.raises(DebugError, match=r"has ended .*pool.debug\(1\)"):
        session.send("p 1")
