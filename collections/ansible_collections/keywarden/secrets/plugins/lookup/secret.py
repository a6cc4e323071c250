# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way a playbook reads a secret value: from the environment's encrypted store."""

from __future__ import annotations

DOCUMENTATION = r"""
name: secret
author: keywarden contributors (@keywarden)
short_description: Read one field of a secret from the keywarden store
extends_documentation_fragment: [keywarden.secrets.settings]
description:
  - Returns one field (C(password), C(username), C(value)) of a secret at one stage (C(current), C(pending), C(previous))
    from the vault-encrypted store of the inventory's environment.
  - The store is decrypted only with the vault password whose vault ID is the environment's name.
  - Use it only in tasks that set C(no_log) to true; never print what it returns.
  - Every read appends a line to the environment's audit log (secret, field, stage, version, host, actor and
    an HMAC-SHA256 of the value under the audit key, never the value). When the log cannot be written the read
    fails (fail closed).
options:
  _terms:
    description: Secret names, optionally as C(name.field).
    required: true
    type: list
    elements: str
  field:
    description: Field to return when a term does not name one.
    type: str
    default: password
  stage:
    description:
      - Which staged value to read. C(live) is what consumers should hold now - C(pending) once a rotation
        has started distributing it, C(current) otherwise.
    type: str
    default: current
    choices: [current, pending, previous, live]
"""

EXAMPLES = r"""
- name: Render the app's database password into its config
  ansible.builtin.template:
    src: app.conf.j2
    dest: /etc/app/app.conf
    mode: "0600"
  no_log: true
  vars:
    app_db_password: "{{ lookup('keywarden.secrets.secret', 'app_db.password') }}"
"""

RETURN = r"""
_raw:
  description: The requested field of each named secret.
  type: list
  elements: str
"""

import os
from typing import Any

from ansible.errors import AnsibleError, AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import audited_reads, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError

# Decrypted stores, keyed by environment and file identity, so a template reading ten values decrypts
# once. An entry answers only for the very vault secret that decrypted it: a cache never bypasses
# the vault ID and password checks.
_CACHE: dict[tuple[str, str, int, int, int], tuple[Any, dict[str, Any]]] = {}


class LookupModule(LookupBase):
    def run(self, terms: list[str], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}
        try:
            # this lookup's options are keywarden's settings (doc fragment keywarden.secrets.settings)
            store = store_for(variables, self._templar, self._loader, plugin=self)
            data = self._read(store)
            stage = self.get_option("stage")
            fields = []
            for term in terms:
                name, _sep, field = str(term).partition(".")
                fields.append((name, field or self.get_option("field")))
            return audited_reads(store, data, fields, stage)
        except AuditError as exc:
            raise AnsibleLookupError(f"secret read refused: {exc}") from None
        except StoreError as exc:
            raise AnsibleLookupError(str(exc)) from None
        except AnsibleError:
            raise

    @staticmethod
    def _read(store: Any) -> dict[str, Any]:
        try:
            st = os.stat(store.path)
        except OSError:
            return store.read()
        key = (store.path, store.environment, st.st_ino, st.st_mtime_ns, st.st_size)
        secret = store.vault_secret()
        cached = _CACHE.get(key)
        if cached is None or cached[0] is not secret:
            _CACHE.clear()
            _CACHE[key] = (secret, store.read())
        return _CACHE[key][1]
