# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""keywarden's settings: where the environment's catalog, store (and its durable copy) and audit log are.

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
  store_backend:
    description:
      - Where the store's durable copy lives.
      - C(local) (the embedded default; the demo, one controller) is the file in O(store_dir) only.
      - C(git) keeps the store file committed in the project's git repository (O(store_dir) must be in its work tree);
        every store write is a commit of that file alone, on top of the remote branch's tip, pushed before the write
        returns; before every read-modify-write (and before reads) the branch is fetched, and a clone whose store is
        not the remote's is refused with a message saying to pull, unless O(store_git_pull). This is the backend for
        AWX, whose jobs run in throwaway copies of the project (docs/security/secrets/awx.md).
    type: str
    choices: [local, git]
    default: local
    vars:
      - name: keywarden_store_backend
    env:
      - name: KEYWARDEN_STORE_BACKEND
    ini:
      - section: keywarden
        key: store_backend
  store_git_remote:
    description:
      - The git backend's remote, a remote name of the checkout or a URL. AWX jobs run in a copy of the project
        whose C(origin) is AWX's own cache, so give the project's real URL here.
    type: str
    default: origin
    vars:
      - name: keywarden_store_git_remote
    env:
      - name: KEYWARDEN_STORE_GIT_REMOTE
    ini:
      - section: keywarden
        key: store_git_remote
  store_git_branch:
    description:
      - The branch of O(store_git_remote) that holds the store. Default the branch the checkout is on, or in an AWX
        job (whose checkout is on a temporary branch) the project's branch, C(awx_project_scm_branch).
    type: str
    vars:
      - name: keywarden_store_git_branch
    env:
      - name: KEYWARDEN_STORE_GIT_BRANCH
    ini:
      - section: keywarden
        key: store_git_branch
  store_git_pull:
    description:
      - With the git backend, bring a local store that is not the remote's to the remote's before reading or
        writing it (a pull of that one file), instead of refusing. For throwaway checkouts (AWX job templates set it);
        leave it off in a person's clone, where a stale store should stop the run and say to pull.
    type: bool
    default: false
    vars:
      - name: keywarden_store_git_pull
    env:
      - name: KEYWARDEN_STORE_GIT_PULL
    ini:
      - section: keywarden
        key: store_git_pull
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
  audit_syslog_server:
    description:
      - A durable sink for the audit trail, C(HOST:PORT) of a syslog server receiving over TCP (rsyslog C(imtcp);
        newline-framed lines, facility authpriv, tag C(keywarden-audit)). Each append is sent after it is written
        to the log file, lines a failed send left behind go with the next append, and an append whose lines cannot
        be sent fails (fail closed, like a log that cannot be written). Needed wherever the log file does not
        outlive the run (AWX jobs); C(scripts/audit/verify-log --trail) checks the combined trail of many jobs.
    type: str
    vars:
      - name: keywarden_audit_syslog_server
    env:
      - name: KEYWARDEN_AUDIT_SYSLOG_SERVER
    ini:
      - section: keywarden
        key: audit_syslog_server
  audit_syslog:
    description: Also forward each audit line to the local syslog/journald (facility authpriv, ident C(keywarden-audit)); best effort.
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
