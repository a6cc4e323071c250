# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A minimal Redis client (RESP2 over TCP, TLS or a unix socket), standard library only: what the redis_logins module
needs on a target host, where redis-py is not installed.

Errors carry the server's error text, which never echoes a password: keywarden sends passwords to the server only
in AUTH (whose errors are fixed strings) and sends SHA-256 digests (``#<hex>``) in ACL SETUSER.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from typing import Any


class RespError(Exception):
    """An error reply of the server (``-ERR ...``, ``-WRONGPASS ...``, ``-NOPERM ...``)."""


class RespConnectionError(Exception):
    """The connection failed or broke (refused, timeout, TLS handshake, closed by the server)."""


def password_digest(password: str) -> str:
    """What Redis keeps of a password (ACL GETUSER ``passwords``): lower-case hex SHA-256 of its bytes."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def tls_context(ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """A client context: the server's certificate checked against ``ca_file`` (and its name) when one is given;
    without one the channel is encrypted but the server unauthenticated (libpq's sslmode=prefer). A client
    certificate when the server asks for one (tls-auth-clients)."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not ca_file:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def _encode(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Redis:
    """One connection. ``command(*args)`` returns the reply (str, int, list, None) or raises RespError."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        unix_socket: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.where = unix_socket or f"{host}:{port}"
        self.tls = tls is not None
        try:
            if unix_socket:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(unix_socket)
            else:
                sock = socket.create_connection((host, port), timeout=timeout)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host if not unix_socket else None)
        except (OSError, ssl.SSLError) as exc:
            raise RespConnectionError(f"cannot connect to Redis at {self.where}{' (TLS)' if tls else ''}: {_why(exc)}") from None
        self._sock = sock
        self._buf = b""

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> Redis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, *args: Any) -> Any:
        return self.pipeline([args])[0]

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send several commands in one write, read their replies in order. An error reply raises RespError (the
        first one; the connection stays usable)."""
        try:
            self._sock.sendall(b"".join(_encode(tuple(args)) for args in commands))
            replies = [self._reply() for _command in commands]
        except (OSError, ssl.SSLError) as exc:
            raise RespConnectionError(f"the connection to Redis at {self.where} broke: {_why(exc)}") from None
        for reply in replies:
            if isinstance(reply, RespError):
                raise reply
        return replies

    # ---- reading ------------------------------------------------------------------------------------
    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise OSError("closed by the server")
            self._buf += chunk
        line, _sep, self._buf = self._buf.partition(b"\r\n")
        return line

    def _exact(self, size: int) -> bytes:
        while len(self._buf) < size + 2:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise OSError("closed by the server")
            self._buf += chunk
        data, self._buf = self._buf[:size], self._buf[size + 2 :]
        return data

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RespError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exact(size).decode("utf-8", "replace")
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            items = [self._reply() for _index in range(count)]
            # an error inside an array (EXEC of a transaction): raise it, in order
            for item in items:
                if isinstance(item, RespError):
                    return item
            return items
        raise OSError(f"unexpected reply type {kind!r}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0]


def pairs(reply: Any) -> dict[str, Any]:
    """A flat [key, value, ...] reply (ACL GETUSER, CONFIG GET) as a dict."""
    if not isinstance(reply, list):
        return {}
    return {str(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}
