# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the `<engine>_logins` modules share: the `logins` option, the tested state, the module's outcome.

Each engine module supplies two functions: `ensure_present(params, logins, check_mode) -> ([changed names],
{failed name: reason})` (raising RuntimeError with a one-line reason when nothing could be done) and `log_in(params, login) -> the user the server says we are`
(raising the driver's error). Messages name secrets, users and hosts, never a password.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import logins_option


def argument_spec(options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The databases' logins: the common fields plus the group role (PostgreSQL) and the database."""
    return {"logins": logins_option(group={"type": "str"}, database={"type": "str"}), **options}


def reason(exc: BaseException) -> str:
    """First line of a driver's or server's message (MySQL drivers put it in args[1])."""
    args = getattr(exc, "args", ())
    text = str(args[1]) if len(args) > 1 and isinstance(args[0], int) else str(exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0]


Errors = tuple[type[BaseException], ...]


# a login waits on the server most of its time (TCP, SCRAM, the auth plugin's or AMQP's exchange): this many at once,
# each on its own connection, here and in rabbitmq_logins (bench/rotation_scale: test_logins.py, --kind rabbitmq)
TEST_CONCURRENCY = 8


def test_logins(params: dict[str, Any], logins: list[dict[str, Any]], log_in: Callable[..., str], errors: Errors) -> list[tuple[str, str]]:
    """Log in with each login, up to TEST_CONCURRENCY at once; (name, reason) for each refused one, in order."""

    def attempt(login: dict[str, Any]) -> str | None:
        try:
            user = log_in(params, login)
        except errors as exc:
            return reason(exc)
        return None if user == login["user"] else "logged in as another user"

    with ThreadPoolExecutor(max_workers=min(TEST_CONCURRENCY, max(1, len(logins)))) as pool:
        outcomes = list(pool.map(attempt, logins))
    return [(login["name"], why) for login, why in zip(logins, outcomes) if why]  # noqa: B905 - Python 3.8 targets


def run(module: Any, ensure_present: Callable[..., tuple[list[str], dict[str, str]]], log_in: Callable[..., str], errors: Errors) -> None:
    """The module's work and exit: state present (set what differs) or tested (log in with each).

    One login's failure does not stop the others: the module fails naming each failed secret in ``failures``
    (name -> reason), so that the rotation engine rolls back only those.
    """
    params = module.params
    logins = params["logins"]
    if params["state"] == "present":
        try:
            changed, failures = ensure_present(params, logins, module.check_mode)
        except RuntimeError as exc:
            module.fail_json(msg=str(exc))
        if failures:
            detail = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
            module.fail_json(msg=f"{len(failures)} of {len(logins)} logins not set: {detail}", failures=failures, changed=bool(changed), changed_names=changed)
        module.exit_json(changed=bool(changed), changed_names=changed, msg=f"{len(changed)} of {len(logins)} logins changed")
    refused = test_logins(params, logins, log_in, errors)
    if refused:
        detail = "; ".join(f"{name}: {why}" for name, why in refused)
        failed = [name for name, _why in refused]
        module.fail_json(msg=f"login refused for {len(refused)} of {len(logins)}: {detail}", failed_names=failed, failures=dict(refused))
    module.exit_json(changed=False, tested=len(logins), msg=f"{len(logins)} logins accepted")
