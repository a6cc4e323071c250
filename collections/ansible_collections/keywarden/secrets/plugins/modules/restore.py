#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the restore action plugin (which does the work on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: restore
short_description: Verify a keywarden backup and restore the environment from it (controller side)
description:
  - Refuses, with one line and nothing changed, an archive that is corrupted or truncated (its SHA-256 or size
    differs from the manifest beside it), encrypted to another key, for another environment, not made under the
    environment's audit key (manifest MAC), whose files differ from its manifest, whose store does not open with the
    vault password given (C(--vault-id <env>@...)), or whose store is older than the store in place (unless
    O(force)).
  - Then replaces the store and its rollback copies; the store file changes in one rename, and the store it replaces
    is kept in C(<store_dir>/replaced-<time>/). The audit log (when the log in place is missing or empty), the
    catalog and CA files (when missing) are restored from the archive; files in place are never overwritten.
  - Appends a C(restore) event that chains onto the audit log in place, then verifies the whole chain; the task
    fails when the chain does not verify.
  - Decrypts with an age identity file kept offline (O(identity_file)); the audit key the backups were made under
    must be present (C(keywarden_audit_key_file) or C(KEYWARDEN_AUDIT_KEY_FILE)).
  - Refuses while a live rotation holds the environment's rotation lock.
  - In check mode, every check runs and nothing is written; it proves an archive restorable.
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: Runs every check and changes nothing.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  archive:
    description:
      - Path of the archive (its C(.manifest.json) beside it), or C(latest) for the newest backup in O(backup_dir),
        fetched first from O(remote) when that is set (the fetched copy stays in O(backup_dir), in check mode too).
    type: str
    required: true
  identity_file:
    description: age identity file (C(AGE-SECRET-KEY-1...) lines, or an unencrypted OpenSSH private key) of a recipient.
    type: str
    required: true
  force:
    description: Restore over a newer store or one that does not open, or an archive whose audit chain is broken.
    type: bool
    default: false
  backup_dir:
    description: Where C(archive=latest) looks, and where a fetched backup is kept. Empty means as for M(keywarden.secrets.backup).
    type: str
    default: ""
  remote:
    description: Backup host and directory, C([user@]host:/dir), to fetch the latest backup from. Empty means none.
    type: str
    default: ""
  ssh_args:
    description: Extra arguments for ssh. C(BatchMode=yes) is always set.
    type: list
    elements: str
    default: []
  lock_timeout:
    description: Seconds to wait for the store's lock.
    type: int
    default: 30
  ca_dir:
    description: CA directory that receives the archived CA files that are missing. Empty means none.
    type: str
  environment:
    description: Environment (and vault ID); defaults to C(keywarden_environment).
    type: str
  store_dir:
    description: Store directory; defaults to C(keywarden_store_dir).
    type: str
  catalog_path:
    description: Catalog file, restored when missing; defaults to C(keywarden_catalog_path).
    type: str
"""

EXAMPLES = r"""
- name: Restore the newest backup from the backup host
  keywarden.secrets.restore:
    archive: latest
    remote: keywarden-backup@backup1.example.org:/srv/keywarden-backups
    identity_file: /media/offline/keywarden-production-backup.key
  run_once: true
"""

RETURN = r"""
store_revision:
  description: Revision of the restored store.
  type: int
  returned: success
replaced_revision:
  description: Revision of the store it replaced (null when there was none, or it did not open).
  type: int
  returned: success
replaced_kept_in:
  description: Directory holding the replaced store and rollback copies (null when nothing was replaced).
  type: str
  returned: success
restored:
  description: Archive members written because nothing was in place (audit log, catalog, CA files).
  type: list
  elements: str
  returned: success
audit_chain:
  description: Result of verifying the audit log after the C(restore) event was appended.
  type: str
  returned: success
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("restore")


if __name__ == "__main__":
    main()
