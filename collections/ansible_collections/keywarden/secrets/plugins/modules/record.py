#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the record action plugin (which does the work on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: record
short_description: Record a value a person got by hand (an API key of provider manual) in the keywarden store
description:
  - Makes O(value) the current value of the secret O(secret); the outgoing one is kept as C(previous). Its issuer,
    not keywarden, revokes the old key (the catalog's provider C(manual) means no API can).
  - Only for entries the rotation engine cannot rotate (kind C(api_key) with provider C(manual), or a C(generic)
    value); any other is refused, naming the playbook that rotates it.
  - The write is audited (event C(record), an HMAC of the new value, the actor), atomic and locked like every store
    write; refused while a rotation holds the environment's lock or the secret has a pending value.
  - A value already current changes nothing. Runs on the controller as an action plugin; returns names and versions,
    never the value. C(playbooks/record.yml) prompts for the value (not echoed) and delivers it to the consumers.
version_added: 0.5.0
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: Says whether the value would change; writes nothing.
  diff_mode:
    support: none
    description: Results hold names and versions, never values.
options:
  secret:
    description: Name of the secret in the catalog.
    type: str
    required: true
  value:
    description:
      - The new value, 8 to 4096 characters from C(A-Z a-z 0-9 _@%+=:,./~-) (what every C(.env) format carries).
        Never on a command line; a prompt, a vars file (C(-e @file), mode 0600) or an AWX survey password field.
    type: str
    required: true
  key_id:
    description: The issuer's id of the key (kind C(api_key)); default a fresh keywarden id.
    type: str
"""

EXAMPLES = r"""
- name: Record the key the payments provider's console issued
  keywarden.secrets.record:
    secret: payments_api_key
    value: "{{ keywarden_record_value }}"
  no_log: true
"""

RETURN = r"""
secret:
  description: The secret.
  type: str
  returned: success
version:
  description: Its version now.
  type: int
  returned: when changed
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("record")


if __name__ == "__main__":
    main()
