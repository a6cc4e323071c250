# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decide, after the set/test step on every target host, what each rotation does next."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def rotation_outcome(plan: list[dict[str, Any]], hostvars: Mapping[str, Any], groups: Mapping[str, list[str]]) -> dict[str, Any]:
    """Split the plan into ``distribute`` (tested on every target host), ``abandon`` (failed and safe to forget:
    alternating users, or every target host rolled back) and ``keep`` (failed, pending kept so the next run resumes).
    ``failed`` maps each failed name to the hosts where it failed or that never answered."""
    out: dict[str, Any] = {"distribute": [], "abandon": [], "keep": [], "failed": {}}
    for item in plan:
        name = item["name"]
        hosts = list(groups.get(item["target_group"], []))
        tested = [h for h in hosts if name in (hostvars.get(h, {}).get("__keywarden_rotate_tested") or [])]
        if hosts and len(tested) == len(hosts):
            out["distribute"].append(name)
            continue
        bad = [h for h in hosts if h not in tested] or [f"(no host in group {item['target_group']})"]
        out["failed"][name] = bad
        rolled_back = all(name in (hostvars.get(h, {}).get("__keywarden_rotate_rolled_back") or []) for h in hosts if h not in tested)
        if item.get("step") == "distributing":
            out["keep"].append(name)  # past the point of no return: the next run rolls forward
        elif item["strategy"] == "alternating_users" or (hosts and rolled_back):
            out["abandon"].append(name)
        else:
            out["keep"].append(name)
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"rotation_outcome": rotation_outcome}
