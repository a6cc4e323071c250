# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An AMQP 0-9-1 login, standard library only: connect, authenticate (PLAIN), open a virtual host, close.

What the rabbitmq_logins module needs to prove a password works where consumers use it (the AMQP port, over TLS
when the node offers it), on a target host that has no AMQP client library. Errors name the user and the server's
reply text, never the password.
"""

from __future__ import annotations

import socket
import ssl
import struct

FRAME_METHOD = 1
FRAME_END = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class AmqpError(Exception):
    """The server refused (bad credentials, no access to the virtual host) or the connection failed."""


def _shortstr(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 255:
        raise AmqpError("a short string is longer than 255 bytes")
    return bytes([len(data)]) + data


def _longstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _table(entries: dict[str, object]) -> bytes:
    out = b""
    for key, value in entries.items():
        out += _shortstr(key)
        if isinstance(value, bool):
            out += b"t" + (b"\x01" if value else b"\x00")
        elif isinstance(value, dict):
            out += b"F" + _table(value)
        else:
            out += b"S" + _longstr(str(value).encode("utf-8"))
    return _longstr(out)


def _method(channel: int, class_id: int, method_id: int, args: bytes) -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", FRAME_METHOD, channel, len(payload)) + payload + FRAME_END


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AmqpError("the server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def method(self) -> tuple[int, int, bytes]:
        """The next method frame: (class, method, arguments); heartbeats and other frames are skipped."""
        while True:
            kind, _channel, size = struct.unpack(">BHI", self._exact(7))
            payload = self._exact(size)
            if self._exact(1) != FRAME_END:
                raise AmqpError("malformed frame from the server")
            if kind == FRAME_METHOD:
                class_id, method_id = struct.unpack(">HH", payload[:4])
                return class_id, method_id, payload[4:]

    def expect(self, class_id: int, method_id: int, user: str) -> bytes:
        got_class, got_method, args = self.method()
        if (got_class, got_method) == (10, 50):  # Connection.Close: the server's refusal
            code = struct.unpack(">H", args[:2])[0]
            text = args[3 : 3 + args[2]].decode("utf-8", "replace")
            raise AmqpError(f"{code} {text}")
        if (got_class, got_method) != (class_id, method_id):
            raise AmqpError(f"unexpected AMQP method {got_class}.{got_method} while logging in as {user}")
        return args


def log_in(host: str, port: int, user: str, password: str, vhost: str, tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
    """Log in and open ``vhost``; AmqpError (with the server's reply, never the password) when refused."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
    except (OSError, ssl.SSLError) as exc:
        raise AmqpError(f"cannot connect to {host}:{port}{' (TLS)' if tls else ''}: {getattr(exc, 'strerror', None) or exc}") from None
    conn = _Conn(sock)
    try:
        sock.sendall(PROTOCOL_HEADER)
        conn.expect(10, 10, user)  # Connection.Start
        # authentication_failure_close: a refused login gets Connection.Close with its reason, not a dropped socket
        properties = {"product": "keywarden", "capabilities": {"authentication_failure_close": True}}
        response = b"\x00" + user.encode("utf-8") + b"\x00" + password.encode("utf-8")
        sock.sendall(_method(0, 10, 11, _table(properties) + _shortstr("PLAIN") + _longstr(response) + _shortstr("en_US")))
        tune = conn.expect(10, 30, user)  # Connection.Tune
        channel_max, frame_max, _heartbeat = struct.unpack(">HIH", tune[:8])
        sock.sendall(_method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        sock.sendall(_method(0, 10, 40, _shortstr(vhost) + _shortstr("") + b"\x00"))  # Connection.Open
        conn.expect(10, 41, user)  # Connection.OpenOk
        sock.sendall(_method(0, 10, 50, struct.pack(">H", 200) + _shortstr("bye") + struct.pack(">HH", 0, 0)))
        conn.expect(10, 51, user)  # Connection.CloseOk
    except (OSError, ssl.SSLError, struct.error) as exc:
        raise AmqpError(f"the connection to {host}:{port} broke: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        sock.close()
