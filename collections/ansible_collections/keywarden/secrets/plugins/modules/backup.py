#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the backup action plugin (which does the work on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: backup
short_description: Make an encrypted backup of a keywarden environment (controller side)
description:
  - Makes one archive of the environment holding the store with its revisions (C(secrets.vault), C(versions/)), the
    catalog, the audit log with its head, and the CA directory when it exists.
  - The archive is a tar encrypted with age to the public keys listed in O(recipients_file); the controller and the
    backup host cannot read it; only the offline identities of those recipients can. Needs no vault password.
  - A SHA-256 manifest travels inside the archive (C(manifest.json), C(SHA256SUMS)) and beside it
    (C(<archive>.manifest.json)); it carries a MAC under the environment's audit key, which is never archived.
  - Two backups at once take turns on a lock in O(backup_dir) and commit by rename, so neither can corrupt the other.
    Retention keeps at most O(keep_count) backups and none older than O(keep_days) (the newest is always kept),
    locally and on the backup host.
  - With O(remote), a copy goes to the backup host over ssh, checked there by its SHA-256 before it is renamed into
    place. Every backup appends a C(backup) event to the audit log (fail closed).
  - The audit log and key come from C(keywarden_audit_log) and C(keywarden_audit_key_file), else
    C(KEYWARDEN_AUDIT_LOG) and C(KEYWARDEN_AUDIT_KEY_FILE) (see the C(keywarden.secrets.secret) lookup).
  - In check mode, only the recipients are checked; nothing is written.
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: Makes no archive and writes nothing; says what would be backed up.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  recipients_file:
    description: File listing the age recipients (C(age1...) or SSH public keys), one a line; C(#) starts a comment.
    type: str
    required: true
  backup_dir:
    description:
      - Local directory of the archives. Empty means C($KEYWARDEN_BACKUP_DIR/<env>), else
        C(~/.local/share/keywarden/backups/<env>).
    type: str
    default: ""
  keep_count:
    description: Keep at most this many backups (here and on the backup host).
    type: int
    default: 14
  keep_days:
    description: Drop backups older than this many days; C(0) means no age limit. The newest backup is always kept.
    type: int
    default: 35
  remote:
    description: Backup host and directory, C([user@]host:/dir), that receives a copy over ssh. Empty means none.
    type: str
    default: ""
  ssh_args:
    description: Extra arguments for ssh (identity, port, known hosts file). C(BatchMode=yes) is always set.
    type: list
    elements: str
    default: []
  lock_timeout:
    description: Seconds to wait for another backup of the same directory to finish.
    type: int
    default: 600
  ca_dir:
    description: CA directory, backed up when it exists. Empty means none.
    type: str
  environment:
    description: Environment; defaults to C(keywarden_environment).
    type: str
  store_dir:
    description: Store directory; defaults to C(keywarden_store_dir).
    type: str
  catalog_path:
    description: Catalog file; defaults to C(keywarden_catalog_path).
    type: str
"""

EXAMPLES = r"""
- name: Back up this environment and copy it to the backup host
  keywarden.secrets.backup:
    recipients_file: "{{ playbook_dir }}/../inventories/{{ keywarden_environment }}/backup/recipients.txt"
    remote: keywarden-backup@backup1.example.org:/srv/keywarden-backups
  run_once: true
"""

RETURN = r"""
archive:
  description: Path of the archive made.
  type: str
  returned: success
manifest:
  description: Path of the manifest beside it.
  type: str
  returned: success
sha256:
  description: SHA-256 of the archive.
  type: str
  returned: success
pruned:
  description: Names of the local archives dropped by retention.
  type: list
  elements: str
  returned: success
remote_pruned:
  description: Names of the archives dropped by retention on the backup host.
  type: list
  elements: str
  returned: success
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("backup")


if __name__ == "__main__":
    main()
