#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the audit action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: audit
short_description: Record deliveries, backups and restores in the environment's audit log
description:
  - Appends one hash-chained JSON line per delivered secret field (C(event=deploy)) or per secret (C(event=backup),
    C(event=restore)) to the environment's audit log, with the actor, the host, the version and an HMAC-SHA256 of the
    value under the audit key; never the value.
  - Fails (fail closed) when the audit log cannot be written. Records nothing in check mode.
  - The log, key file and syslog forwarding come from C(keywarden_audit_log), C(keywarden_audit_key_file) and
    C(keywarden_audit_syslog), else the environment variables C(KEYWARDEN_AUDIT_LOG), C(KEYWARDEN_AUDIT_KEY_FILE) and
    C(KEYWARDEN_AUDIT_SYSLOG), else C(audit_log), C(audit_key_file), C(audit_syslog) in the C([keywarden]) section of
    ansible.cfg (see the C(keywarden.secrets.secret) lookup).
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: Records nothing in check mode.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  event:
    description: What happened.
    type: str
    required: true
    choices: [deploy, backup, restore]
  services:
    description: For C(deploy), the C(services) list of C(keywarden.secrets.env_plan).
    type: list
    elements: dict
    default: []
  changed:
    description: For C(deploy), the services whose file changed.
    type: list
    elements: str
    default: []
  dest_dir:
    description: For C(deploy), the directory that received the files.
    type: str
  stage:
    description: Stage of the values delivered, backed up or restored.
    type: str
    default: live
  secrets:
    description: For C(backup) and C(restore), the secrets concerned (default all in the store).
    type: list
    elements: str
    default: []
  outcome:
    description: Outcome recorded.
    type: str
    default: ok
  detail:
    description: For C(backup) and C(restore), extra fields recorded (archive path, revision); never values.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Record the delivered .env files
  keywarden.secrets.audit:
    event: deploy
    services: "{{ plan.services }}"
    dest_dir: /srv/keywarden
"""

RETURN = r"""
recorded:
  description: Number of audit lines written.
  type: int
  returned: always
log:
  description: Path of the audit log.
  type: str
  returned: success
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("audit")


if __name__ == "__main__":
    main()
