"""ZeroMQ CURVE on the bus: encryption, authentication against an allow-list, and sender identity.

Keys live in one folder (``marlmesh keys gen DIR --agents N``): ``agent-<i>.key`` holds agent i's public
key, ``agent-<i>.key_secret`` its public and secret key (ZeroMQ certificate files). Every agent needs its own
secret file and every peer's public file. With ``bus.security.curve: true``:

- every PULL socket is a CURVE server, every PUSH socket a CURVE client that knows the receiver's public key,
  so traffic is encrypted and a client must prove it holds its secret key;
- a ZAP handler admits only the public keys of agents 0..N-1 (the allow-list); a handshake with any other
  key fails, so an unauthenticated peer's frames never reach the receiver (counted as
  ``unauthenticated`` handshakes);
- the handler tags each connection with the agent index of its key; an envelope whose ``src`` differs from
  the authenticated index is dropped and counted as ``impersonation``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


def public_key_path(directory: Path, agent: int) -> Path:
    """File of agent ``agent``'s public key."""
    return directory / f"agent-{agent}.key"


def secret_key_path(directory: Path, agent: int) -> Path:
    """File of agent ``agent``'s secret key."""
    return directory / f"agent-{agent}.key_secret"


def generate_keys(directory: Path, agents: int) -> list[Path]:
    """Create a CURVE key pair per agent in ``directory`` (existing files are kept).

    Returns:
        The files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(agents):
        if public_key_path(directory, i).is_file() and secret_key_path(directory, i).is_file():
            continue
        pub, sec = zmq.auth.create_certificates(str(directory), f"agent-{i}")
        secret_key_path(directory, i).chmod(0o600)
        written += [Path(pub), Path(sec)]
    return written


@dataclass(frozen=True)
class CurveKeys:
    """What one agent needs: its key pair and every agent's public key (the allow-list)."""

    agent: int
    public: bytes
    secret: bytes
    peers: dict[int, bytes]

    @classmethod
    def load(cls, directory: str | Path, agent: int, num_agents: int) -> CurveKeys:
        """Read the keys of ``agent`` and the public keys of all ``num_agents`` agents.

        Raises:
            ValueError: Naming the missing or unreadable key file.
        """
        d = Path(directory)
        try:
            public, secret = zmq.auth.load_certificate(str(secret_key_path(d, agent)))
        except (OSError, ValueError) as exc:
            raise ValueError(f"bus.security.keys_dir: cannot read the secret key of agent {agent}: {exc}") from None
        if secret is None:
            raise ValueError(f"bus.security.keys_dir: {secret_key_path(d, agent)} holds no secret key")
        peers = {}
        for i in range(num_agents):
            try:
                peers[i], _ = zmq.auth.load_certificate(str(public_key_path(d, i)))
            except (OSError, ValueError) as exc:
                raise ValueError(f"bus.security.keys_dir: cannot read the public key of agent {i}: {exc}") from None
        return cls(agent, public, secret, peers)


class _AllowList(ThreadAuthenticator):
    """ZAP handler: admits the agents' public keys; the User-Id of a connection is the agent index."""

    def __init__(self, context: zmq.Context, keys: dict[bytes, int], counts: Counter[str]) -> None:
        super().__init__(context)
        self.by_key = {zmq.utils.z85.encode(k) if len(k) == 32 else k: i for k, i in keys.items()}
        self.counts = counts

    def callback(self, domain: str, z85_key: bytes) -> bool:
        """Credentials provider: whether the key is on the allow-list."""
        ok = z85_key in self.by_key
        if not ok:
            self.counts["unauthenticated"] += 1
            log.warning("bus: rejected a CURVE handshake from an unknown key")
        return ok

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The agent index of an admitted key."""
        return str(self.by_key[zmq.utils.z85.encode(client_public_key)])


_lock = threading.Lock()
_authenticators: dict[int, tuple[_AllowList, int]] = {}  # id(context) -> (handler, buses using it)


def secure_sockets(
    context: zmq.Context, keys: CurveKeys, server: zmq.Socket, counts: Counter[str]
) -> ThreadAuthenticator:
    """Make ``server`` (the bus PULL socket) a CURVE server behind the allow-list (before it binds).

    One ZAP handler serves a ZeroMQ context; it is started on first use.
    """
    with _lock:
        found = _authenticators.get(id(context))
        if found is None:
            auth = _AllowList(context, {k: i for i, k in keys.peers.items()}, counts)
            auth.start()
            auth.configure_curve_callback("*", credentials_provider=auth)
            users = 0
        else:
            auth, users = found
        _authenticators[id(context)] = (auth, users + 1)
    server.curve_secretkey = keys.secret
    server.curve_publickey = keys.public
    server.curve_server = True
    return auth


def secure_client(keys: CurveKeys, client: zmq.Socket, peer: int) -> None:
    """Make ``client`` (a PUSH socket to ``peer``) a CURVE client of that peer (before it connects)."""
    client.curve_secretkey = keys.secret
    client.curve_publickey = keys.public
    client.curve_serverkey = keys.peers[peer]


def release(context: zmq.Context) -> None:
    """A bus of ``context`` closed; the ZAP handler stops with the last one."""
    with _lock:
        found = _authenticators.pop(id(context), None)
        if found is None:
            return
        auth, users = found
        if users > 1:
            _authenticators[id(context)] = (auth, users - 1)
            return
    auth.stop()


SECRET_NAME = "marlmesh-bus-keys"
"""Name of the Kubernetes Secret holding every agent's CURVE key files."""


def secret_manifest(directory: Path, agents: int, name: str = SECRET_NAME, namespace: str = "marlmesh") -> str:
    """A Kubernetes Secret holding every agent's key files (mount it at ``bus.security.keys_dir``).

    Every agent pod mounts the whole Secret and reads its own ``agent-<i>.key_secret`` (a StatefulSet cannot
    mount a different Secret per ordinal); split it per agent if pods must not see each other's secrets.
    """
    import base64

    lines = ["apiVersion: v1", "kind: Secret", "metadata:", f"  name: {name}", f"  namespace: {namespace}",
             "type: Opaque", "data:"]  # fmt: skip
    for i in range(agents):
        for path in (public_key_path(directory, i), secret_key_path(directory, i)):
            lines.append(f"  {path.name}: {base64.b64encode(path.read_bytes()).decode()}")
    return "\n".join(lines) + "\n"
