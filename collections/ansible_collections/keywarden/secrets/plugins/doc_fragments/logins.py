# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options and attributes shared by the `<engine>_logins` modules."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    description: O(state=present) reads what differs and rolls its transaction back (PostgreSQL) or changes nothing (MariaDB).
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  logins:
    description:
      - The logins to set or test. The rotation engine's drivers (C(keywarden.secrets.target)) read them from the
        store (each read audited) and pass them here; the passwords never appear in a task's own arguments.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the secret in the catalog (what messages and C(failures) name).
        type: str
        required: true
      user:
        description: Login role name.
        type: str
        required: true
      password:
        description: Its password (never logged; sent pre-hashed where the server allows it).
        type: str
        required: true
      group:
        description: Group role the login is a member of (PostgreSQL, alternating users).
        type: str
      database:
        description: The database the login uses (its privileges; the test logs in to it).
        type: str
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
