"""mysql_native_password hashes: the server's PASSWORD() format, deterministic, never made from an empty password."""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from ansible_collections.keywarden.secrets.plugins.module_utils.mysql import native_password as mysql_native_password

# (password, what MariaDB 10.11's SELECT PASSWORD(...) returns for it over a utf8mb4 connection): public test vectors
VECTORS = [
    ("password", "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),
    ("a", "*667F407DE7C6AD07358FA38DAED7828A72014B4E"),
    ("pässwörd-€", "*59F6D8CC82EED7478C442A935A518429583A6047"),
]


@pytest.mark.parametrize(("password", "expected"), VECTORS, ids=["ascii", "one-char", "utf-8"])
def test_hash_is_what_the_server_computes(password: str, expected: str) -> None:
    assert mysql_native_password(password) == expected


def test_hash_format_is_what_mysql_user_accepts_as_encrypted() -> None:
    # community.mysql's is_hash(): 41 characters, '*' then hex; the server keeps it as sent, upper case
    assert re.fullmatch(r"\*[0-9A-F]{40}", mysql_native_password(secrets.token_urlsafe(24)))


def test_hash_is_deterministic_and_tells_passwords_apart() -> None:
    password = secrets.token_urlsafe(24)
    same = mysql_native_password(password) == mysql_native_password(password)
    differ = mysql_native_password(password) != mysql_native_password(password + "x")
    assert same
    assert differ


def test_bytes_and_non_strings_are_accepted() -> None:
    assert mysql_native_password(b"password") == VECTORS[0][1]
    assert mysql_native_password(12345) == mysql_native_password("12345")


@pytest.mark.parametrize("empty", [None, "", b""], ids=["none", "empty-str", "empty-bytes"])
def test_empty_password_is_refused(empty: Any) -> None:
    with pytest.raises(ValueError, match="password is empty"):
        mysql_native_password(empty)
