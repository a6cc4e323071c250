# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the `<engine>_logins` modules (and their actions)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  names:
    description:
      - Names of secrets of the module's kind in the catalog (this environment). The action reads their C(username)
        and C(password) at O(stage) from the store, records each read in the audit log, and passes them as O(logins).
    type: list
    elements: str
  stage:
    description: Which stored value the logins get (C(live) is C(pending) while a rotation distributes it, else C(current)).
    type: str
    default: live
    choices: [current, pending, previous, live]
  logins:
    description: The logins, as the action resolved them from O(names). Set by the action; a task gives O(names).
    type: list
    elements: dict
  state:
    description: C(present) sets the logins; C(tested) logs in with each.
    type: str
    default: present
    choices: [present, tested]
  test_host:
    description: Address the logins are tested on (O(state=tested)); TCP so that the server checks the password.
    type: str
    default: 127.0.0.1
  connect_timeout:
    description: Seconds to wait for each connection.
    type: int
    default: 10
"""
