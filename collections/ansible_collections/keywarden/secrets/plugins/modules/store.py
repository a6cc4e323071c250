#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the store action plugin (which does the work on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: store
short_description: Write the keywarden encrypted store (controller side)
description:
  - The only writer of an environment's vault-encrypted store. Generates every secret the catalog lists
    for the environment and the store lacks, from the entry's generator policy; never changes an existing value.
  - Creates a store only when asked (O(create)). A store that is missing otherwise fails the task with the latest
    revision in C(versions/) and the restore runbook, never a silent set of new values.
  - Each write's audit records are appended before the store is written; the store keeps their position in the log.
  - Atomic (temp file, fsync, rename), keeps the last C(keywarden_store_keep_versions) encrypted copies, and holds
    an exclusive lock; a second writer fails with a message naming the holder.
  - Runs on the controller as an action plugin; returns names and revision numbers, never values.
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: Says which secrets would be created; writes nothing.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  state:
    description: C(generated) creates every missing secret.
    type: str
    default: generated
    choices: [generated]
  catalog_path:
    description: Catalog file; defaults to C(keywarden_catalog_path).
    type: str
  environment:
    description: Environment and vault ID; defaults to C(keywarden_environment).
    type: str
  store_dir:
    description: Store directory; defaults to C(keywarden_store_dir).
    type: str
  create:
    description:
      - Create the environment's first store when there is none (C(-e keywarden_store_create=true)).
        Defaults to C(keywarden_store_create), else false.
    type: bool
"""

EXAMPLES = r"""
- name: Generate every missing secret of this environment
  keywarden.secrets.store:
    state: generated

- name: Create a new environment's first store
  keywarden.secrets.store:
    state: generated
    create: true
"""

RETURN = r"""
created:
  description: Names of the secrets created by this run.
  type: list
  elements: str
  returned: always
revision:
  description: Store revision after the run.
  type: int
  returned: always
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("store")


if __name__ == "__main__":
    main()
