"""SCRAM-SHA-256 verifiers: they match their password only, and a real PostgreSQL accepts them as a role's password."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import psycopg2
import pytest

from ansible_collections.keywarden.secrets.plugins.module_utils.scram import matches as scram_sha256_matches
from ansible_collections.keywarden.secrets.plugins.module_utils.scram import verifier as scram_sha256_verifier


def test_verifier_has_postgresql_format() -> None:
    verifier = scram_sha256_verifier(secrets.token_urlsafe(24))
    scheme, rest = verifier.split("$", 1)
    head, keys = rest.split("$", 1)
    iterations, salt = head.split(":")
    stored, server = keys.split(":")
    assert scheme == "SCRAM-SHA-256"
    assert iterations == "4096"
    assert [len(base64.b64decode(part)) for part in (salt, stored, server)] == [16, 32, 32]


def test_verifier_matches_its_password_only() -> None:
    password = secrets.token_urlsafe(24)
    verifier = scram_sha256_verifier(password)
    # booleans first: a failed assert on the call would print its arguments, the password among them
    matches, longer, empty = scram_sha256_matches(verifier, password), scram_sha256_matches(verifier, password + "x"), scram_sha256_matches(verifier, "")
    assert (matches, longer, empty) == (True, False, False)
    # a fresh salt each time: two verifiers of one password differ, and both match it
    again = scram_sha256_verifier(password)
    differ = again != verifier
    assert differ
    again_matches = scram_sha256_matches(again, password)
    assert again_matches is True


def test_verifier_with_custom_iterations() -> None:
    password = secrets.token_urlsafe(24)
    verifier = scram_sha256_verifier(password, iterations=1000)
    assert verifier.startswith("SCRAM-SHA-256$1000:")
    matches = scram_sha256_matches(verifier, password)
    assert matches is True


@pytest.mark.parametrize("stored", [None, "", "md5abcdef", "SCRAM-SHA-1$x"], ids=["none", "empty", "md5", "other-scheme"])
def test_no_verifier_never_matches(stored: Any) -> None:
    assert scram_sha256_matches(stored, "whatever-password") is False


def test_malformed_verifier_is_an_error_without_the_password() -> None:
    password = secrets.token_urlsafe(24)
    with pytest.raises(ValueError) as caught:
        scram_sha256_matches("SCRAM-SHA-256$not-a-verifier", password)
    leaked = password in str(caught.value)
    assert not leaked
    assert "malformed" in str(caught.value)


def _connect(postgres: Any, user: str, password: str) -> Any:
    return psycopg2.connect(host="127.0.0.1", port=postgres.port, dbname="postgres", user=user, password=password, connect_timeout=5)


def test_postgresql_accepts_the_verifier(postgres: Any) -> None:
    role = "kw_scram_probe"
    password = secrets.token_urlsafe(24)
    verifier = scram_sha256_verifier(password)
    admin = psycopg2.connect(host=postgres.socket_dir, port=postgres.port, dbname="postgres", user="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"DROP ROLE IF EXISTS {role}")
            # the server receives the verifier, never the password (psycopg2 quotes it as a literal)
            cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (verifier,))
            cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
            (rolpassword,) = cur.fetchone()
        kept_as_sent = rolpassword == verifier
        assert kept_as_sent
        matches = scram_sha256_matches(rolpassword, password)
        assert matches is True

        # over TCP the throwaway server demands scram-sha-256: a login proves the verifier
        conn = _connect(postgres, role, password)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (role,)
        conn.close()
        with pytest.raises(psycopg2.OperationalError) as caught:
            _connect(postgres, role, password + "-wrong")
        assert "password authentication failed" in str(caught.value)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()
