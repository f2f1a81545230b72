"""A light nanny for each engine: relays control messages, sends signals, reports death.

ipyparallel starts a nanny process beside every engine (``python -m
ipyparallel.engine.nanny``). It stands between the control scheduler and the engine:
``client.send_signal`` reaches the engine through it (pxpool's interrupts, timeouts
and the panel's buttons), and when the engine exits it tells the hub at once, so the
hub drops the engine in milliseconds instead of after missed heartbeats. That nanny
imports all of ipyparallel first (~0.85 s of CPU per engine), and the engine waits
for it before it serves: on 2 cores, the largest part of a pool's start.

This nanny does the same with only pyzmq and the standard library (~0.1 s):

- every control message is relayed both ways unchanged, except ``signal_request``,
  which it verifies (HMAC, the pool's key) and answers itself after signalling the
  engine, as ipyparallel's nanny does;
- it watches the engine through a pidfd (Linux; a 0.1 s poll elsewhere) and sends the
  hub an ``unregistration_request`` for the engine when it exits, then exits too;
- it runs in a session of its own and ignores SIGINT, SIGTERM, SIGHUP, SIGUSR1 and
  SIGUSR2: signals meant for the engine's job (a walltime warning, a cancel) must not
  end the process that reports the engine's exit.

:func:`start` runs on the engine (``pxpool._entry.engine_main``); :func:`main` is the nanny.
Messages follow the Jupyter wire protocol (``<IDS|MSG>``, HMAC signature, header,
parent header, metadata, content).
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import os
import select
import signal
import subprocess
import sys
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

from .pids import alive

DELIMITER = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"
IGNORED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
POLL_MS = 100  # how often the engine's pid is checked where there is no pidfd
START_TIMEOUT = 30.0  # seconds the engine waits for the nanny's address


# ---------------------------------------------------------------- engine side


class Prepared:
    """A nanny forked ahead (:func:`prepare`), waiting for its settings on a pipe."""

    def __init__(self, pid: int, settings_fd: int, address_fd: int) -> None:
        self.pid = pid
        self.stdin = os.fdopen(settings_fd, "wb")
        self.stdout = os.fdopen(address_fd, "rb")  # kept open while the engine runs

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass


_prepared: Prepared | None = None


def prepare() -> None:
    """Fork this engine's nanny now, while the engine has imported everything but
    started no thread and no zmq context: the nanny then costs a fork instead of a
    Python start and the imports (~0.1 s of CPU each). It waits for its settings
    until :func:`start`; if the engine exits first, it reads end of file and exits."""
    global _prepared
    if not hasattr(os, "fork"):
        return
    settings_r, settings_w = os.pipe()
    address_r, address_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the nanny
        code = 1
        try:
            os.close(settings_w)
            os.close(address_r)
            os.setsid()  # the engine's signals are not the nanny's
            os.dup2(settings_r, 0)
            os.dup2(address_w, 1)
            gc.freeze()  # the engine's objects stay shared: the nanny never collects them
            main()
            code = 0
        finally:
            os._exit(code)
    os.close(settings_r)
    os.close(address_w)
    _prepared = Prepared(pid, settings_w, address_r)


def start(settings: dict[str, Any]) -> tuple[str, Any]:
    """Start the nanny for this engine (or hand its settings to the one :func:`prepare`
    forked); returns the address the engine's control socket connects to, and the
    process (its stdout pipe must stay open: the nanny takes the pipe closing as the
    engine exiting)."""
    global _prepared
    prepared, _prepared = _prepared, None
    if prepared is not None:
        return _hand_over(prepared, {**settings, "pid": os.getpid()}), prepared
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", __name__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,  # the engine's signals are not the nanny's
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps({**settings, "pid": os.getpid()}).encode())
    process.stdin.close()
    return _hand_over(process, {**settings, "pid": os.getpid()}), process


def _hand_over(process: Any, settings: dict[str, Any]) -> str:
    """Send the nanny its settings; its first line is the address it listens on."""
    process.stdin.write(json.dumps(settings).encode())
    process.stdin.close()
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
    url = process.stdout.readline().decode().strip() if ready else ""
    if not url:
        process.kill()
        raise RuntimeError(f"pxpool: the engine's nanny gave no address within {START_TIMEOUT:g}s")
    return str(url)


# ---------------------------------------------------------------- the nanny


class Signer:
    """Signs and checks messages as jupyter_client's Session does (HMAC over the
    header, parent header, metadata and content frames)."""

    def __init__(self, key: bytes, scheme: str, username: str) -> None:
        algorithm = scheme.split("-", 1)[-1] if scheme.startswith("hmac-") else "sha256"
        self.key = key
        self.digest = getattr(hashlib, algorithm)
        self.username = username
        self.session = str(uuid.uuid4())

    def sign(self, frames: list[bytes]) -> bytes:
        if not self.key:
            return b""
        mac = hmac.new(self.key, digestmod=self.digest)
        for frame in frames:
            mac.update(frame)
        return mac.hexdigest().encode()

    def valid(self, signature: bytes, frames: list[bytes]) -> bool:
        return not self.key or hmac.compare_digest(signature, self.sign(frames))

    def message(
        self, idents: list[bytes], msg_type: str, content: dict[str, Any], parent: Any = None
    ) -> list[bytes]:
        header = {
            "msg_id": str(uuid.uuid4()),
            "msg_type": msg_type,
            "username": self.username,
            "session": self.session,
            "date": datetime.now(UTC).isoformat(),
            "version": PROTOCOL_VERSION,
        }
        frames = [json.dumps(part).encode() for part in (header, parent or {}, {}, content)]
        return [*idents, DELIMITER, self.sign(frames), *frames]


class Nanny:
    def __init__(self, settings: dict[str, Any]) -> None:
        import zmq

        self.zmq = zmq
        self.pid = int(settings["pid"])
        self.engine_id = int(settings["engine_id"])
        self.registration_url = settings["registration_url"]
        self.curve = {
            k: (settings.get(k) or "").encode() for k in ("serverkey", "publickey", "secretkey")
        }
        self.signer = Signer(
            bytes.fromhex(settings["key"]), settings["scheme"], settings["username"]
        )
        self.context = zmq.Context()
        self.control = self.context.socket(zmq.ROUTER)  # to the control scheduler
        self.control.setsockopt(zmq.IDENTITY, settings["identity"].encode("latin-1"))
        self._connect(self.control, settings["control_url"])
        self.parent = self.context.socket(zmq.DEALER)  # the engine's control socket
        if self.curve["secretkey"]:
            self.parent.setsockopt(zmq.CURVE_SERVER, 1)
            self.parent.setsockopt(zmq.CURVE_SECRETKEY, self.curve["secretkey"])
        self.port = self.parent.bind_to_random_port("tcp://127.0.0.1")

    def _connect(self, socket: Any, url: str) -> None:
        if self.curve["serverkey"]:
            public, secret = self.zmq.curve_keypair()  # encryption only, no client auth
            socket.setsockopt(self.zmq.CURVE_SERVERKEY, self.curve["serverkey"])
            socket.setsockopt(self.zmq.CURVE_PUBLICKEY, public)
            socket.setsockopt(self.zmq.CURVE_SECRETKEY, secret)
        socket.connect(url)

    def run(self, pipe: Any) -> None:
        zmq = self.zmq
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.parent, zmq.POLLIN)
        poller.register(pipe.fileno(), zmq.POLLERR)  # the engine closing its end
        watch = _pidfd(self.pid)
        if watch is not None:
            poller.register(watch, zmq.POLLIN)  # readable once the engine exited
        pipe.write(f"tcp://127.0.0.1:{self.port}\n")
        pipe.flush()
        while True:
            events = dict(poller.poll(None if watch is not None else POLL_MS))
            if self.control in events:
                self._from_scheduler(self.control.recv_multipart())
            if self.parent in events:
                self.control.send_multipart(self.parent.recv_multipart())
            gone = watch in events or pipe.fileno() in events
            if gone or (watch is None and not alive(self.pid)):
                break
        self._report_exit()

    def _from_scheduler(self, frames: list[bytes]) -> None:
        try:
            split = frames.index(DELIMITER)
        except ValueError:
            return  # not a Jupyter message: dropped, as the engine would
        idents, signature, parts = frames[:split], frames[split + 1], frames[split + 2 : split + 6]
        header = json.loads(parts[0]) if len(parts) == 4 else {}
        if header.get("msg_type") != "signal_request":
            self.parent.send_multipart(frames)
            return
        if not self.signer.valid(signature, parts):
            return  # unsigned or wrongly signed: nothing happens
        try:
            sig = json.loads(parts[3])["sig"]
            os.kill(self.pid, getattr(signal, sig) if isinstance(sig, str) else int(sig))
            content: dict[str, Any] = {"status": "ok"}
        except Exception as exc:
            content = {
                "status": "error",
                "ename": type(exc).__name__,
                "evalue": str(exc),
                "traceback": traceback.format_exception(exc),
                "engine_info": {},
            }
        self.control.send_multipart(self.signer.message(idents, "signal_reply", content, header))

    def _report_exit(self) -> None:
        """Tell the hub the engine is gone, then close (a bounded linger)."""
        socket = self.context.socket(self.zmq.DEALER)
        socket.setsockopt(self.zmq.LINGER, 3000)
        self._connect(socket, self.registration_url)
        socket.send_multipart(
            self.signer.message([], "unregistration_request", {"id": self.engine_id})
        )
        socket.close()
        self.control.close(linger=0)
        self.parent.close(linger=0)
        self.context.term()


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def main() -> None:
    for name in IGNORED_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    data = sys.stdin.buffer.read()
    if not data.strip():
        return  # a nanny forked ahead whose engine exited before it registered
    Nanny(json.loads(data)).run(sys.stdout)


if __name__ == "__main__":
    main()
