# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Generic values (a session signing key, a shared token between two of our own services).

No server holds them: a rotation generates a new value and distributes it; the consumers restart with it. There is
nothing to set, test or revoke, so a rotation has no target hosts (the engine distributes a targetless value as
soon as it is created). Only `single_user` applies: until every consumer has restarted, old and new holders differ,
which is acceptable only for values the consumers check among themselves.
"""

from __future__ import annotations

from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Driver, Item, Outcomes, Target


class GenericDriver(Driver):
    kind = "generic"

    def set(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return {item.name: None for item in items}

    def test(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return {item.name: None for item in items}


DRIVER = GenericDriver()
