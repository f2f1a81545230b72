"""Remote debugging through real engines: post-mortem, breakpoint(), timeouts, refusal."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

import pxpool
from pxpool._debug.session import request
from pxpool._debug.wire import SignedConn, sign
from pxpool.debug import DebugAuthError, DebugError

pytestmark = pytest.mark.integration


def fails_with_local(n: int) -> None:
    secret = n * 7
    raise ValueError(f"bad input {n} ({secret})")


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
        assert session.ended and session.end_reason.startswith("continued")
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


def test_unsigned_connection_is_refused(pool: pxpool.Pool) -> None:
    host, port = pool._debug_address(0)
    with socket.create_connection((host, port), timeout=10) as raw:
        reader = raw.makefile("rb")
        hello = json.loads(reader.readline())
        assert hello["hello"] == "pxpool-debug/1"
        raw.sendall(b'{"op": "postmortem"}\n')
        assert "refused: unsigned message" in json.loads(reader.readline())["error"]
        assert reader.readline() == b""  # closed by the engine
    assert pool.view(0).apply_sync(ok) == "engine works"


def test_wrong_key_is_refused(pool: pxpool.Pool) -> None:
    host, port = pool._debug_address(1)
    conn = SignedConn.connect(host, port, b"not-the-pool-key", 10)
    with pytest.raises(DebugAuthError, match="refused: bad signature"):
        request(conn, {"op": "postmortem"})
    conn.close()
    assert pool.view(1).apply_sync(ok) == "engine works"


def test_message_replayed_from_another_connection_is_refused(pool: pxpool.Pool) -> None:
    host, port = pool._debug_address(1)
    key = pool.client.session.key
    with socket.create_connection((host, port), timeout=10) as raw:
        reader = raw.makefile("rb")
        json.loads(reader.readline())
        body = json.dumps({"op": "status", "nonce": "0" * 32, "seq": 1, "origin": "client"})
        raw.sendall(json.dumps({"body": body, "sig": sign(key, body)}).encode() + b"\n")
        assert "nonce or origin mismatch" in json.loads(reader.readline())["error"]


def test_debug_timeout_must_be_positive(pool: pxpool.Pool) -> None:
    with pytest.raises(ValueError, match="debug_timeout must be a positive number"):
        pool.debug_timeout = 0


def test_an_ended_session_says_how_to_open_a_new_one(pool: pxpool.Pool) -> None:
    with pool.debug(1) as session:
        pass
    with pytest.raises(DebugError, match=r"has ended .*pool.debug\(1\)"):
        session.send("p 1")
