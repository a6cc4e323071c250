# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The driver interface: what a kind must do for the rotation engine (and for provisioning).

A driver works on one target host at a time, for all the secrets of its kind that host serves, and answers per
secret: ``Outcomes`` maps each secret name to None (done) or a one-line reason (never a value). One secret's failure
must not stop the others: a driver reports it and goes on.

The engine calls, on each target host:

- ``set(target, items, stage)``: make the target accept each item's value at ``stage`` (provisioning: ``live``;
  rotation: ``pending``). Idempotent.
- ``test(target, items, stage)``: prove each value works at the target (a real login, over TLS where offered).
- ``rollback(target, items)``: undo ``set`` of a pending value that will not be distributed. The default gives
  single-user logins their current value back; a strategy whose pending value sits where no consumer looks
  (alternating users' standby login) needs nothing.
- ``revoke(target, items, stage)``: retire a value consumers no longer use (a Redis password, an API key after its
  overlap window). Only called when ``retire_after`` says so.

and on the controller: ``due(entry, stored, data, now)`` (whether the secret is due for rotation; default: its
current value is older than the policy's max_age_days), ``rotatable(entry, stored, data)`` (None, or why this entry
cannot be rotated by the engine and what to do instead), ``logins(entry)`` (the login names of the entry's strategy),
``needs(entry)`` (other secrets' current fields the new value is made from, e.g. a certificate's CA key: the engine
reads them, each read audited), ``new_fields(entry, current, peers)`` (the pending value's fields: a fresh password,
the other login, a certificate issued with ``peers``), ``holds(entry)`` (whether a pending value that was set must be
undone before it is forgotten) and ``retire_after(entry)`` (seconds after promotion until the outgoing value is
revoked; None: never, it stays valid until the next rotation replaces it).

``stored`` is the secret's record in the decrypted store and ``data`` the whole store: a driver may read public
facts of another secret there (a certificate's CA certificate), never put a value into a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS, login_names
from ansible_collections.keywarden.secrets.plugins.plugin_utils.rotation import age_due
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError, generate_value

Outcomes = dict[str, "str | None"]


class Target(Protocol):
    """One target host, as the `keywarden.secrets.target` action presents it to a driver."""

    host: str
    check_mode: bool

    def setting(self, name: str, default: Any = None) -> Any:
        """A host variable (templated), e.g. keywarden_target_postgresql_port; ``default`` when unset."""

    def module(self, name: str, args: dict[str, Any], become_user: str | None = None) -> dict[str, Any]:
        """Run a module on the host (as ``become_user`` when given); its result, failed or not."""


@dataclass
class Item:
    """One secret at one target: its catalog entry, and its stored fields by stage (each read audited, on demand)."""

    name: str
    entry: dict[str, Any]
    _read: Callable[[str, str], dict[str, str]] = field(repr=False)

    def fields(self, stage: str) -> dict[str, str]:
        return self._read(self.name, stage)

    def secret(self, name: str, stage: str = "live") -> dict[str, str]:
        """Another secret's fields, read (and audited) like this item's own: the admin login a driver connects with when
        its server has no peer authentication (Redis, RabbitMQ), an issuer's admin token. StoreError when the store
        lacks that secret."""
        try:
            return self._read(name, stage)
        except KeyError:
            raise StoreError(f"secret '{name}' is not in the store; run playbooks/init.yml") from None


class Driver:
    """Defaults for a kind whose only strategy is `single_user` and that nothing can revoke."""

    kind = ""

    def logins(self, entry: dict[str, Any]) -> tuple[str, ...]:
        return login_names(entry) if "role" in entry["target"] else ()

    def due(self, entry: dict[str, Any], stored: dict[str, Any], data: dict[str, Any], now: float) -> bool:
        """Whether the secret is due for rotation now (it is also rotated when requested, or resumed)."""
        return age_due(entry, stored, now)

    def needs(self, entry: dict[str, Any]) -> list[tuple[str, str]]:
        """(secret, field) of other secrets whose current values ``new_fields`` needs; the engine reads them (audited)."""
        return []

    def new_fields(self, entry: dict[str, Any], current: dict[str, str], peers: Mapping[tuple[str, str], str] | None = None) -> dict[str, str]:
        """The pending value: a fresh secret field from the policy's generator; for alternating users, the other login."""
        fields = dict(current)
        policy = entry["policy"]
        secret_field = "password" if "password" in fields else "value"
        fields[secret_field] = generate_value(policy["length"], CHARSETS[policy["charset"]])
        if policy["strategy"] == "alternating_users":
            first, second = self.logins(entry)
            fields["username"] = second if current.get("username") == first else first
        return fields

    def rotatable(self, entry: dict[str, Any], stored: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> str | None:
        """None when the engine can rotate this entry; else why not and what to do instead (the run then fails naming
        it, e.g. an API key that only its issuer's web console can make)."""
        return None

    def holds(self, entry: dict[str, Any]) -> bool:
        return entry["policy"]["strategy"] == "single_user"

    def retire_after(self, entry: dict[str, Any]) -> float | None:
        return None

    def set(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        raise NotImplementedError

    def test(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        raise NotImplementedError

    def rollback(self, target: Target, items: list[Item]) -> Outcomes:
        undo = [item for item in items if self.holds(item.entry)]
        out: Outcomes = {item.name: None for item in items if item not in undo}
        if undo:
            out.update(self.set(target, undo, "current"))
        return out

    def revoke(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return {item.name: f"kind {self.kind} cannot revoke a value" for item in items}


def module_outcomes(items: list[Item], result: dict[str, Any]) -> Outcomes:
    """Per secret, from a module result: a module fails naming the secrets it could not handle in ``failures``
    (name -> reason); a failure without it (no connection, say) is every secret's."""
    if not result.get("failed"):
        return {item.name: None for item in items}
    failures = result.get("failures")
    if isinstance(failures, dict) and failures:
        return {item.name: failures.get(item.name) for item in items}
    reason = str(result.get("msg") or "the module failed").strip().splitlines()[0]
    return {item.name: reason for item in items}


class LoginsDriver(Driver):
    """A database whose logins a `keywarden.secrets.<kind>_logins` module sets (state present) and tests (state tested),
    all of a host's logins in one module run. Connection settings are host variables `keywarden_target_<kind>_*`."""

    module_name = ""
    # module option -> (host variable, default); None values are left out
    admin_settings: dict[str, tuple[str, Any]] = {}
    test_settings: dict[str, tuple[str, Any]] = {}
    become_setting = ""

    def login(self, item: Item, fields: dict[str, str]) -> dict[str, Any]:
        return {"name": item.name, "user": fields["username"], "password": fields["password"], "database": item.entry["target"].get("database")}

    def _args(self, target: Target, table: dict[str, tuple[str, Any]]) -> dict[str, Any]:
        args = {option: target.setting(var, default) for option, (var, default) in table.items()}
        return {option: value for option, value in args.items() if value not in (None, "")}

    def _run(self, target: Target, items: list[Item], stage: str, state: str) -> Outcomes:
        if not items:
            return {}
        logins = [self.login(item, item.fields(stage)) for item in items]
        table = self.admin_settings if state == "present" else {**self.admin_settings, **self.test_settings}
        args = {**self._args(target, table), "state": state, "logins": logins}
        become = (target.setting(self.become_setting) or None) if state == "present" and self.become_setting else None
        return module_outcomes(items, target.module(self.module_name, args, become_user=become))

    def set(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return self._run(target, items, stage, "present")

    def test(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return self._run(target, items, stage, "tested")
