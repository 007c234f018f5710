"""The shared secret that authorizes ``Control.Shutdown`` (without mTLS, or from a non-launcher identity).

The launcher generates a fresh token per run (``RUN_DIR/control.token``, mode 0600) and gives every process
it starts ``MARLMESH_CONTROL_TOKEN_FILE``; ``marlmesh keys gen`` writes one for Kubernetes (in the
``marlmesh-tls`` Secret). A caller sends it as the gRPC metadata ``x-marlmesh-control-token``. A process
started without a token refuses every remote shutdown unless mTLS authenticates the launcher.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from marlmesh import contract

METADATA_KEY = "x-marlmesh-control-token"
"""gRPC metadata key carrying the token."""
TOKEN_ENV = contract.CONTROL_TOKEN.name
"""Variable holding the token itself."""
TOKEN_FILE_ENV = contract.CONTROL_TOKEN_FILE.name
"""Variable naming a file that holds the token (also the flag ``--control-token-file``)."""
MIN_TOKEN_CHARS = 16
"""Shortest token accepted (a generated one has 43 characters)."""


def write_new_token(path: Path) -> str:
    """Generate a token and write it to ``path`` readable by the owner only (atomic); returns it."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


def load_token(token_file: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The token from ``MARLMESH_CONTROL_TOKEN``, else from ``token_file`` (or ``MARLMESH_CONTROL_TOKEN_FILE``).

    Returns:
        The token, or None if none is configured.

    Raises:
        ValueError: Naming the variable or file when the file is unreadable or the token too short.
    """
    env = os.environ if environ is None else environ
    token, source = env.get(TOKEN_ENV) or None, TOKEN_ENV
    if token is None:
        token_file = token_file or env.get(TOKEN_FILE_ENV) or None
        if token_file is None:
            return None
        source = f"{TOKEN_FILE_ENV} ({token_file})"
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"{TOKEN_FILE_ENV}: cannot read the control token file {token_file}: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{source}: the control token must have at least {MIN_TOKEN_CHARS} characters")
    return token


def metadata(token: str) -> tuple[tuple[str, str]]:
    """The call metadata that carries ``token``."""
    return ((METADATA_KEY, token),)
