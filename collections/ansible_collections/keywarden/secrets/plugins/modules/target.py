#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the target action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: target
short_description: A target host's part of keywarden provisioning and rotation, for every kind, through its drivers
description:
  - Acts on the secrets whose catalog C(target.group) holds this host, through the driver of each secret's kind
    (C(plugin_utils/drivers/<kind>.py)). Values are read on the controller, each read recorded in the audit log, and
    reach the host only as the arguments of the kind's module.
  - O(phase=provision) makes the targets accept each secret's live value (what its consumers hold). The task fails
    naming every secret that could not be set; the others are set all the same.
  - O(phase=test) logs in with each secret's live value (a real login, over TLS where offered), which proves that
    the targets accept what the consumers hold. The task fails naming every secret that was refused.
  - O(phase=set_test) sets each rotating secret's pending value, tests it with a real login, and rolls a failed one
    back on this host. It reports per secret to the rotation run; it does not fail for one secret (the run fails at
    its end naming it), so the host stays in the run for the other secrets.
  - O(phase=cleanup) rolls back the failed rotations the engine chose for this host and revokes outgoing values
    whose retirement is due (now, or after an overlap window).
  - Host variables C(keywarden_target_<kind>_*) say how each driver reaches its server (role C(keywarden_target)).
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: O(phase=provision) reports what would change; the rotation phases do nothing.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  phase:
    description: Which part.
    type: str
    required: true
    choices: [provision, test, set_test, cleanup]
"""

EXAMPLES = r"""
- name: Make this host's servers accept the store's live values
  keywarden.secrets.target:
    phase: provision
"""

RETURN = r"""
provisioned:
  description: With O(phase=provision), the secrets set (or already right) on this host.
  type: list
  elements: str
  returned: when phase is provision
changed_names:
  description: With O(phase=provision), the secrets whose target was changed (or would be, in check mode).
  type: list
  elements: str
  returned: when phase is provision
tested:
  description: With O(phase=test), the secrets whose live value logged in.
  type: list
  elements: str
  returned: when phase is test
failures:
  description: With O(phase=provision) or O(phase=test), secret name -> why it could not be set or was refused.
  type: dict
  returned: when phase is provision or test
reports:
  description: With the rotation phases, secret name -> outcome on this host (ok, reason), as reported to the run.
  type: dict
  returned: when phase is set_test or cleanup
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("target")


if __name__ == "__main__":
    main()
