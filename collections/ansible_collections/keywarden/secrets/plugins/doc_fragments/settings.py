# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""keywarden's settings: where the environment's catalog, store and audit log are.

One definition for every plugin. The `secret` lookup reads them as its options; the action plugins resolve the
same options through that lookup's configuration (plugin_utils/context.py `settings`), so each setting has the
same sources everywhere: a play variable, then an environment variable, then `[keywarden]` in ansible.cfg.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  environment:
    description:
      - Environment of the run, also the vault ID of its store (C(vault_id_match) is on). Usually set per inventory
        in C(group_vars/all).
    type: str
    vars:
      - name: keywarden_environment
    env:
      - name: KEYWARDEN_ENVIRONMENT
    ini:
      - section: keywarden
        key: environment
  store_dir:
    description:
      - Directory holding the environment's store (C(secrets.vault), its C(versions/) and locks).
      - Default C(<project>/inventories/<environment>/store), where C(<project>) is the directory above C(playbooks/)
        (the playbook's own directory when it is not called C(playbooks)). It never depends on the inventory's
        location, so an AWX inventory source or an C(-i) pointing anywhere finds the project's store.
    type: path
    vars:
      - name: keywarden_store_dir
    env:
      - name: KEYWARDEN_STORE_DIR
    ini:
      - section: keywarden
        key: store_dir
  catalog_path:
    description: The catalog file. Default C(<project>/config/secrets/catalog.yml).
    type: path
    vars:
      - name: keywarden_catalog_path
    env:
      - name: KEYWARDEN_CATALOG_PATH
    ini:
      - section: keywarden
        key: catalog_path
  store_keep_versions:
    description: How many earlier revisions of the store are kept, encrypted, in C(versions/).
    type: int
    default: 10
    vars:
      - name: keywarden_store_keep_versions
    env:
      - name: KEYWARDEN_STORE_KEEP_VERSIONS
    ini:
      - section: keywarden
        key: store_keep_versions
  store_lock_timeout:
    description: Seconds a store writer waits for another writer's lock before it gives up, naming the holder.
    type: float
    default: 0
    vars:
      - name: keywarden_store_lock_timeout
    env:
      - name: KEYWARDEN_STORE_LOCK_TIMEOUT
    ini:
      - section: keywarden
        key: store_lock_timeout
  audit_log:
    description:
      - Audit log of the environment (JSON lines, hash-chained, mode 0600). Default C(<store_dir>/audit.log).
    type: path
    vars:
      - name: keywarden_audit_log
    env:
      - name: KEYWARDEN_AUDIT_LOG
    ini:
      - section: keywarden
        key: audit_log
  audit_key_file:
    description:
      - File holding the audit key (hex, mode 0600, never in the repository).
        Default C(~/.config/keywarden/audit-<environment>.key).
    type: path
    vars:
      - name: keywarden_audit_key_file
    env:
      - name: KEYWARDEN_AUDIT_KEY_FILE
    ini:
      - section: keywarden
        key: audit_key_file
  audit_syslog:
    description: Also forward each audit line to syslog/journald (facility authpriv, ident C(keywarden-audit)).
    type: bool
    default: false
    vars:
      - name: keywarden_audit_syslog
    env:
      - name: KEYWARDEN_AUDIT_SYSLOG
    ini:
      - section: keywarden
        key: audit_syslog
"""
