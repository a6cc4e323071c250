"""Logins under load during a rotation: what a busy consumer sees.

A client logs in to the throwaway PostgreSQL over TCP (scram-sha-256) as fast as it can, from a few threads,
re-reading the consumer's .env before every login (as a consumer restarted by the rotation would), while
playbooks/rotate.yml rotates the credential. alternating_users must cost no login at all; single_user has a
window, from `set` at the server to `distribute` of the .env, where the consumer's value is refused: that
count is recorded, not asserted. Each run prints one summary line; with KEYWARDEN_BENCH_RESULTS=<dir> it is
also written to <dir>/load-<strategy>.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest
from rotation_helpers import LoadClient, catalog, clone, connects, env_creds, login, pg_secret, provisioned, record_load, rotate, store_creds

MIN_RATE = 50.0  # logins/s the client must sustain for the result to mean anything
THREADS = 6
SECRETS = {"alternating_users": "load_alt", "single_user": "load_single"}
PREFIX = {"alternating_users": "ALT", "single_user": "SINGLE"}
ROLES = {"alternating_users": "ldalt", "single_user": "ldsingle"}


@dataclass
class LoadResult:
    strategy: str
    logins: int = 0
    failed: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    failure_window_s: float = 0.0
    users: dict[str, int] = field(default_factory=dict)
    rotation_s: float = 0.0


class Client(LoadClient):
    """THREADS threads logging in with the .env's credentials, re-read before each login."""

    def __init__(self, ws: Any, port: int, prefix: str) -> None:
        super().__init__(THREADS)
        self.ws, self.port, self.prefix = ws, port, prefix

    def operation(self) -> tuple[str, bool]:
        creds = env_creds(self.ws, "load", self.prefix)
        return (creds.user, True) if connects(self.port, creds) else ("refused", False)


@pytest.fixture(scope="module")
def template(make_workspace: Callable[..., Any], postgres: Any) -> Any:
    secrets = {name: pg_secret(ROLES[strategy], strategy, [("app", "load", PREFIX[strategy])]) for strategy, name in SECRETS.items()}
    return provisioned(make_workspace, "load-template", catalog(secrets), postgres)


def _record(result: LoadResult, capsys: pytest.CaptureFixture[str], record_property: Callable[[str, Any], None]) -> None:
    line = (
        f"rotation load {result.strategy}: {result.logins} logins in {result.seconds:.1f}s ({result.rate:.0f}/s, {THREADS} threads), "
        f"{result.failed} failed (window {result.failure_window_s:.1f}s), rotation {result.rotation_s:.1f}s, logins by user {result.users}"
    )
    record_load(line, {**asdict(result), "threads": THREADS}, f"load-{result.strategy}", capsys, record_property)


@pytest.mark.parametrize("strategy", ["alternating_users", "single_user"])
def test_logins_during_a_rotation(
    workspace: Callable[..., Any],
    template: Any,
    postgres: Any,
    strategy: str,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, Any], None],
) -> None:
    ws = clone(workspace, template, "load", postgres)
    name, prefix = SECRETS[strategy], PREFIX[strategy]
    with Client(ws, postgres.port, prefix) as client:
        time.sleep(1)  # the client is up to speed before the rotation starts
        run = rotate(ws, only=name)
        time.sleep(1)  # and keeps going once it is over
    assert run.returncode == 0, run.explain()
    assert not client.errors, f"reading the .env failed: {sorted(set(client.errors))}"

    total = client.total
    result = LoadResult(
        strategy=strategy,
        logins=total,
        failed=len(client.failures),
        seconds=round(client.seconds, 1),
        rate=round(total / client.seconds, 1),
        failure_window_s=client.failure_window,
        users=dict(sorted(client.successes.items())),
        rotation_s=round(run.seconds, 1),
    )
    _record(result, capsys, record_property)

    assert result.rate >= MIN_RATE, f"the client managed {result.rate}/s, below {MIN_RATE}/s: the run proves nothing"
    new = store_creds(ws, name)
    assert new is not None and env_creds(ws, "load", prefix).fingerprint == new.fingerprint
    assert login(postgres.port, new) == new.user
    if strategy == "alternating_users":
        # the consumer moved from one login to the other while logging in, and not one login failed
        assert set(client.successes) == {"ldalt_a", "ldalt_b"}
        assert result.failed == 0, f"{result.failed} logins failed during an alternating_users rotation"
