#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the catalog_check action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: catalog_check
short_description: Validate the keywarden secrets catalog
description:
  - Loads the catalog on the controller and checks it against the schema (docs/security/secrets/catalog.md). A problem,
    a key given twice in one mapping included, fails the task with one line naming the entry and the field to fix.
    Returns the normalised catalog, which holds no secret.
  - Fails when the environment's store does not exist, naming the latest revision in C(versions/) and the restore
    runbook, unless this run creates the store on purpose (O(store_create)). It runs first in every playbook, so a
    lost store stops every run before anything is generated or pushed.
  - Warns (the Ansible convention for a host pattern that matches nothing) about each target or consumer group of the
    environment's entries that matches no host of the inventory.
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: The check only reads.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  path:
    description: Catalog file; defaults to C(keywarden_catalog_path).
    type: str
  environment:
    description: Environment whose secrets are listed; defaults to C(keywarden_environment).
    type: str
  store_dir:
    description: Store directory of the environment; defaults to C(keywarden_store_dir).
    type: str
  store_create:
    description:
      - This run creates the environment's first store on purpose (C(-e keywarden_store_create=true)); a missing
        store is then no error. Defaults to C(keywarden_store_create), else false.
    type: bool
"""

EXAMPLES = r"""
- name: Check the catalog
  keywarden.secrets.catalog_check:
"""

RETURN = r"""
catalog:
  description: The normalised catalog (defaults filled in).
  type: dict
  returned: success
secrets:
  description: Names of the secrets that exist in the environment.
  type: list
  elements: str
  returned: success
unmatched_groups:
  description: One line per target or consumer group that matches no inventory host (also given as warnings).
  type: list
  elements: str
  returned: success
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("catalog_check")


if __name__ == "__main__":
    main()
