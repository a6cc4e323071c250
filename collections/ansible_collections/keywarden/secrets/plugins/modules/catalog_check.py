#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the catalog_check action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: catalog_check
short_description: Validate the keywarden secrets catalog
description:
  - Loads the catalog on the controller and checks it against the schema. A problem fails the task with one line
    naming the entry and the field to fix. Returns the normalised catalog, which holds no secret.
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
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("catalog_check")


if __name__ == "__main__":
    main()
