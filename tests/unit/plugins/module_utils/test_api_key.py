"""module_utils/api_key.py and the key-file logic of the api_key_nginx module: the map file nginx reads (written,
read back, edited by id or by key), messages that never hold a key, and HTTP statuses from a real server."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ansible_collections.keywarden.secrets.plugins.module_utils.api_key import KEY_RE, HttpError, http_status, parse_map, pattern, redact, render_map
from ansible_collections.keywarden.secrets.plugins.modules.api_key_nginx import _check_keys, _entries


def _key() -> str:
    return secrets.token_urlsafe(30)


def test_the_map_file_reads_back_as_written() -> None:
    keys = [(pattern("", _key()), "kw-20260101-00000001"), (pattern("Bearer", _key()), "kw-20260101-00000002")]
    text = render_map("payments_api_key", keys)
    assert text.startswith("# Managed by keywarden") and text.endswith(";\n")
    assert parse_map(text) == keys
    assert all(KEY_RE.match(value.removeprefix("Bearer ")) for value, _id in keys)


def test_a_line_keywarden_did_not_write_is_named_by_its_number() -> None:
    with pytest.raises(ValueError, match="line 3 was not written by keywarden"):
        parse_map('# ok\n"~^abc$" "id";\nabc 1;\n')


def test_accept_and_revoke_edit_by_id_or_by_key_and_keep_the_others_in_place() -> None:
    old, current, new = _key(), _key(), _key()
    lines = [(old, "id-old"), (current, "id-current")]
    spec = {"scheme": "", "accept": [{"id": "id-new", "value": new}], "revoke": [{"id": "id-old", "value": old}]}
    assert _entries(spec, lines) == [(current, "id-current"), (new, "id-new")]
    # idempotent: the same change again changes nothing
    assert _entries(spec, _entries(spec, lines)) == [(current, "id-current"), (new, "id-new")]
    # a key found by its value under another id, or an id holding another key, is replaced, not doubled
    other = _key()
    respec = {"scheme": "", "accept": [{"id": "id-current", "value": other}, {"id": "id-x", "value": new}], "revoke": []}
    assert _entries(respec, [(current, "id-current"), (new, "id-new")]) == [(other, "id-current"), (new, "id-x")]
    # revoke finds a key by its value even when the file has it under another id
    assert _entries({"scheme": "", "accept": [], "revoke": [{"id": "nope", "value": current}]}, lines) == [(old, "id-old")]


def test_keys_a_pattern_cannot_hold_are_refused_without_naming_them() -> None:
    bad = "abc$def" + _key()
    why = _check_keys({"scheme": "", "accept": [{"id": "id", "value": bad}], "revoke": []})
    assert why is not None and bad not in why and "charset" in why
    assert _check_keys({"scheme": "", "accept": [{"id": "id one", "value": _key()}], "revoke": []}) is not None
    assert _check_keys({"scheme": "Bearer", "accept": [{"id": "kw-1", "value": _key()}], "revoke": []}) is None


def test_redact_removes_every_key() -> None:
    one, two = _key(), _key()
    text = redact(f'nginx: [emerg] unexpected "{one}" in {two}.map:3', [one, two, ""])
    assert one not in text and two not in text and text.count("<key>") == 2


# ---- HTTP statuses from a real server ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass

        def _reply(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append({"method": self.command, "path": self.path, "key": self.headers.get("X-API-Key"), "body": json.loads(body) if body else None})
            code = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else 200
            data = b'{"echo": "the key would be here"}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _reply  # noqa: N815 - http.server's names

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("code", [200, 201, 204, 401, 404, 409, 500])
def test_http_status_is_the_answer_whatever_it_is(server: tuple[str, list[dict[str, Any]]], code: int) -> None:
    base, _seen = server
    assert http_status(f"{base}/status/{code}", "DELETE") == code


def test_http_status_sends_the_header_and_a_json_body(server: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = server
    key = _key()
    assert http_status(f"{base}/keys", "POST", {"X-API-Key": key}, {"id": "kw-1", "key": key}) == 200
    assert seen[-1] == {"method": "POST", "path": "/keys", "key": key, "body": {"id": "kw-1", "key": key}}


def test_no_answer_is_one_line_without_the_key() -> None:
    key = _key()
    with pytest.raises(HttpError) as caught:
        http_status("http://127.0.0.1:9/whoami?x=1", headers={"X-API-Key": key}, timeout=2)
    message = str(caught.value)
    assert message.startswith("no answer from http://127.0.0.1:9/whoami:") and key not in message and "\n" not in message
