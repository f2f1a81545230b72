"""pxpool's nanny speaks the Jupyter wire protocol as jupyter_client's Session does:
what it signs, a Session accepts; what a Session signs with another key, it refuses."""

from __future__ import annotations

import pytest
import zmq
from jupyter_client.session import Session

from pxpool._entry.nanny import DELIMITER, Signer

KEY = b"0123456789abcdef-pool-key"


def session_frames(key: bytes, msg_type: str, content: dict) -> list[bytes]:
    """What a Session sends, as the frames a ROUTER would hand the nanny."""
    context = zmq.Context.instance()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    try:
        port = a.bind_to_random_port("tcp://127.0.0.1")
        b.connect(f"tcp://127.0.0.1:{port}")
        Session(key=key, signature_scheme="hmac-sha256").send(
            b, msg_type, content=content, ident=[b"scheduler"]
        )
        assert a.poll(5000)
        return a.recv_multipart()
    finally:
        a.close(linger=0)
        b.close(linger=0)


def test_a_reply_the_nanny_signs_is_accepted_by_a_session_with_the_pool_key() -> None:
    signer = Signer(KEY, "hmac-sha256", "engine")
    parent = {"msg_id": "m1", "msg_type": "signal_request"}
    frames = signer.message([b"client"], "signal_reply", {"status": "ok"}, parent)
    idents, rest = Session(key=KEY).feed_identities(frames)
    message = Session(key=KEY, signature_scheme="hmac-sha256").deserialize(rest)
    assert idents == [b"client"]
    assert message["msg_type"] == "signal_reply" and message["content"] == {"status": "ok"}
    assert message["parent_header"]["msg_id"] == "m1"
    with pytest.raises(ValueError, match="Invalid Signature"):
        Session(key=b"another key").deserialize(rest)


@pytest.mark.parametrize(("sent_with", "valid"), [(KEY, True), (b"wrong", False), (b"", False)])
def test_the_nanny_accepts_only_requests_signed_with_the_pool_key(
    sent_with: bytes, valid: bool
) -> None:
    frames = session_frames(sent_with, "signal_request", {"sig": "SIGINT"})
    split = frames.index(DELIMITER)
    signature, parts = frames[split + 1], frames[split + 2 : split + 6]
    assert Signer(KEY, "hmac-sha256", "engine").valid(signature, parts) is valid
