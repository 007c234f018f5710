"""CURVE on the bus: encrypted, authenticated peers only; impersonation rejected and counted."""

import time

import numpy as np
import pytest
import zmq
import zmq.auth

from comm_bus.envelope import Envelope, serialize
from comm_bus.security import CurveKeys, generate_keys
from tests.unit.test_bus import make_buses


def _frame(src: int, value: float, tick: int = 0) -> bytes:
    return serialize(
        Envelope(
            src=src,
            dst=1,
            channel="c",
            tick=tick,
            round=0,
            seq=1,
            sent_at=time.time(),
            payload={"msg": np.full((2, 4), value, np.float32)},
        )  # fmt: skip
    )


def _client(keys_public: bytes, keys_secret: bytes, server_key: bytes, address: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_publickey = keys_public
    sock.curve_secretkey = keys_secret
    sock.curve_serverkey = server_key
    sock.connect(address)
    return sock


@pytest.fixture
def secure3(tmp_path):
    keys = tmp_path / "keys"
    written = generate_keys(keys, 3)
    assert len(written) == 6 and (keys / "agent-2.key_secret").stat().st_mode & 0o777 == 0o600
    # one ZeroMQ context per bus, as in separate processes (a context has one ZAP handler)
    buses = make_buses(3, "bus.security.curve=true", f"bus.security.keys_dir={keys}", own_contexts=True)
    yield buses, keys, tmp_path
    for b in buses:
        b.close()


def test_curve_mesh_talks_and_rejects_outsiders_and_impostors(secure3):
    buses, keys, tmp_path = secure3
    for tick in range(2):
        for i, bus in enumerate(buses):
            bus.send(tick=tick, round=0, channel="c", payload={"msg": np.full((2, 4), i, np.float32)},
                     peers=[0, 1, 2])  # fmt: skip
        for i, bus in enumerate(buses):
            got = bus.collect(tick=tick, round=0, channel="c", expected=[0, 1, 2], timeout_s=5)
            assert sorted(got) == [p for p in range(3) if p != i]
    target = buses[1]
    server_key = CurveKeys.load(keys, 1, 3).peers[1]
    address = target.addressing.peer_address(1)
    # an outsider with a key pair that is not on the allow-list, claiming to be agent 0
    pub, sec = zmq.auth.create_certificates(str(tmp_path), "outsider")
    outsider_pub, outsider_sec = zmq.auth.load_certificate(sec)
    outsider = _client(outsider_pub, outsider_sec, server_key, address)
    # a plain socket without CURVE at all
    plain = zmq.Context.instance().socket(zmq.PUSH)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(address)
    # agent 2's real keys, but envelopes claiming src 0 (impersonation)
    agent2 = CurveKeys.load(keys, 2, 3)
    impostor = _client(agent2.public, agent2.secret, server_key, address)
    impostor.send(_frame(0, 666.0, tick=5))
    outsider.send(_frame(0, 666.0, tick=5))
    try:
        plain.send(_frame(0, 666.0, tick=5), zmq.NOBLOCK)
    except zmq.Again:
        pass
    buses[0].send(tick=5, round=0, channel="c", payload={"msg": np.full((2, 4), 7.0, np.float32)}, peers=[1])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        not target.totals.dropped.get("impersonation") or not target._auth_counts.get("unauthenticated")
    ):
        target.collect(tick=5, round=0, channel="c", expected=[0], timeout_s=0.2)
        time.sleep(0.05)
    got = target.collect(tick=5, round=0, channel="c", expected=[0], timeout_s=5)
    assert got[0].payload["msg"][0, 0] == 7.0  # only the real agent 0's value reached the mailbox
    assert target.totals.dropped["impersonation"] >= 1
    assert target.totals.dropped["unauthenticated"] >= 1
    # ticks 0-1 from agents 0 and 2, and agent 0's tick 5: nothing from the outsider, plain or impostor
    assert target.totals.frames_received == 5
    for sock in (outsider, plain, impostor):
        sock.close(0)


def test_curve_needs_keys(tmp_path):
    from marlmesh.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="keys_dir"):
        load_config(None, ["bus.security.curve=true"])
    with pytest.raises(ValueError, match="cannot read the secret key of agent 0"):
        make_buses(2, "bus.security.curve=true", f"bus.security.keys_dir={tmp_path}")
