"""The JSON-RPC credential: a random token in a file only its owner can read.

``jsonrpc_secret`` in ser.cfg gives the token itself; otherwise
``jsonrpc_secret_file`` names a file holding it (relative names are taken
from the working directory, as ``web_secret_file`` is).  ``ser`` creates
that file (mode 0600, owner = the server's user) when it does not exist and
refuses to start when it exists but others could read or replace it, as
ssh does with its keys: a token everyone can read protects nothing.  The
clients (serctl, serweb, tests) read the same option from the same ser.cfg.
With neither option the server makes a token of its own that only the web
interface running inside it knows: JSON-RPC over HTTP is then closed to
every other client, which is the safe default.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from typing import Any


class TokenError(Exception):
    """The token file is missing, unreadable or not private."""


def _check_private(st: os.stat_result, path: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise TokenError(f"JSON-RPC secret file {path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise TokenError(f"JSON-RPC secret file {path} belongs to uid {st.st_uid}, not to this server")
    if st.st_mode & 0o077:
        raise TokenError(
            f"JSON-RPC secret file {path} is readable or writable by others (mode {st.st_mode & 0o777:04o});"
            " chmod 600 it"
        )


def read_token(path: str) -> str:
    """The token in ``path`` (first line), for clients: raises TokenError."""
    try:
        with open(path, encoding="ascii") as f:
            token = f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenError(f"cannot read JSON-RPC secret file {path}: {e}") from None
    if not token:
        raise TokenError(f"JSON-RPC secret file {path} is empty")
    return token


def server_token(path: str) -> str:
    """The server's token: created in ``path`` (0600, never following a
    link) when missing, else read after checking that only we own it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise TokenError(f"cannot open JSON-RPC secret file {path}: {e.strerror}") from None
        try:
            _check_private(os.fstat(fd), path)
        finally:
            os.close(fd)
        return read_token(path)
    except OSError as e:
        raise TokenError(f"cannot create JSON-RPC secret file {path}: {e.strerror}") from None
    token = secrets.token_hex(32)  # no leading "-" to pass for an option on a command line
    try:
        os.write(fd, (token + "\n").encode("ascii"))
    finally:
        os.close(fd)
    return token


def configured_token(options: Mapping[str, Any]) -> str | None:
    """What a client should send, from the server's ser.cfg options:
    ``jsonrpc_secret``, else the contents of ``jsonrpc_secret_file``."""
    secret = options.get("jsonrpc_secret")
    if secret:
        return str(secret)
    path = options.get("jsonrpc_secret_file")
    return read_token(str(path)) if path else None
