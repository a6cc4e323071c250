# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""API keys, issued by a provider (plugin_utils/api_key_providers.py: nginx, http, manual).

overlap (default): ``set`` creates the pending key beside the current one, so both work while the consumers move;
the current key is revoked ``policy.overlap_hours`` after promotion (0: in this run's clean-up, once every consumer
holds the new key; more: by the first rotation run after that). single_user (nginx only): ``set`` replaces the key,
and consumers holding the old one are refused until ``distribute`` reaches them.

A rotation also revokes the key before the current one (``previous``) at ``set``: after promotion the store no longer
knows it, and a key the store does not know must not stay live. Scheduled rotations never meet one that still works
(the catalog keeps overlap_hours within max_age_days); a rotation requested inside the window ends it early.

Only the key at the stage being handled is read (each read audited); the admin token of provider http too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils.api_key_providers import PROVIDERS, Change, Key, Probe, key_of, provider_of
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Driver, Item, Outcomes, Target
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import generate_key_id, generate_value


class ApiKeyDriver(Driver):
    kind = "api_key"

    def logins(self, entry: dict[str, Any]) -> tuple[str, ...]:
        return ()

    def new_fields(self, entry: dict[str, Any], current: dict[str, str], peers: Mapping[tuple[str, str], str] | None = None) -> dict[str, str]:
        """A fresh key and a fresh id, persisted as pending before any provider sees them."""
        policy = entry["policy"]
        return {"value": generate_value(policy["length"], CHARSETS[policy["charset"]]), "key_id": generate_key_id()}

    def rotatable(self, entry: dict[str, Any], stored: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> str | None:
        return PROVIDERS[provider_of(entry)["type"]].steps(entry)

    def holds(self, entry: dict[str, Any]) -> bool:
        return True  # a key that was set works until it is revoked

    def retire_after(self, entry: dict[str, Any]) -> float | None:
        policy = entry["policy"]
        return float(policy["overlap_hours"] * 3600) if policy["strategy"] == "overlap" else None

    # ---- per target host ---------------------------------------------------------------------------------
    def _run(self, target: Target, changes: list[Change], probes: list[Probe], missing: Outcomes) -> Outcomes:
        """Hand each provider its secrets' changes and probes; one outcome per secret."""
        by_type: dict[str, tuple[list[Change], list[Probe]]] = {}
        for change in changes:
            by_type.setdefault(provider_of(change.item.entry)["type"], ([], []))[0].append(change)
        for probe in probes:
            by_type.setdefault(provider_of(probe.item.entry)["type"], ([], []))[1].append(probe)
        out = dict(missing)
        for kind, (kind_changes, kind_probes) in sorted(by_type.items()):
            out.update(PROVIDERS[kind].apply(target, kind_changes, kind_probes))
        return out

    @staticmethod
    def _keys(item: Item, *stages: str) -> dict[str, Key | None]:
        return {stage: key_of(item.fields(stage)) for stage in stages}

    def set(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        changes: list[Change] = []
        missing: Outcomes = {}
        for item in items:
            if stage != "pending":  # provisioning: the value consumers hold
                keys = self._keys(item, stage)
                accept, revoke = [keys[stage]], []
            elif item.entry["policy"]["strategy"] == "single_user":
                keys = self._keys(item, "pending", "current", "previous")
                accept, revoke = [keys["pending"]], [keys["current"], keys["previous"]]
            else:
                keys = self._keys(item, "pending", "previous")
                accept, revoke = [keys["pending"]], [keys["previous"]]
            if accept[0] is None:
                missing[item.name] = f"no {stage} value in the store"
                continue
            changes.append(Change(item, [key for key in accept if key], [key for key in revoke if key]))
        return self._run(target, changes, [], missing)

    def test(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        probes: list[Probe] = []
        missing: Outcomes = {}
        for item in items:
            key = key_of(item.fields(stage))
            if key is None:
                missing[item.name] = f"no {stage} value in the store"
            else:
                probes.append(Probe(item, key))
        return self._run(target, [], probes, missing)

    def rollback(self, target: Target, items: list[Item]) -> Outcomes:
        """Revoke the pending key (single_user: and accept the current one again); prove the pending one is refused."""
        changes: list[Change] = []
        probes: list[Probe] = []
        done: Outcomes = {}
        for item in items:
            single = item.entry["policy"]["strategy"] == "single_user"
            keys = self._keys(item, "pending", "current") if single else self._keys(item, "pending")
            pending = keys["pending"]
            if pending is None:
                done[item.name] = None  # nothing was set
                continue
            current = keys.get("current")
            changes.append(Change(item, [current] if current is not None else [], [pending]))
            probes.append(Probe(item, pending, accepted=False))
        return self._run(target, changes, probes, done)

    def revoke(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        """Retire the key at ``stage`` (the outgoing one: `current` before promotion, `previous` after); prove it is refused."""
        changes: list[Change] = []
        probes: list[Probe] = []
        done: Outcomes = {}
        for item in items:
            key = key_of(item.fields(stage))
            if key is None:
                done[item.name] = None
                continue
            changes.append(Change(item, [], [key]))
            probes.append(Probe(item, key, accepted=False))
        return self._run(target, changes, probes, done)


DRIVER = ApiKeyDriver()
