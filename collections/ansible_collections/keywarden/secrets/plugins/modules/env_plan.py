#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the env_plan action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: env_plan
short_description: Which .env files a host receives, and which variables each holds
description:
  - From the catalog and the host's groups, lists the services whose consumer group the host is in, each with the
    variable names it consumes and where each comes from (secret and field, or a non-secret literal).
  - Holds no values; rendering reads them through the C(keywarden.secrets.secret) lookup.
author: keywarden contributors
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  catalog_path:
    description: Catalog file; defaults to C(keywarden_catalog_path).
    type: str
  environment:
    description: Environment; defaults to C(keywarden_environment).
    type: str
  groups:
    description: Groups of the host; defaults to C(group_names).
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Plan this host's .env files
  keywarden.secrets.env_plan:
  register: plan
"""

RETURN = r"""
services:
  description: One item per service with C(service), C(systemd_unit), C(compose_service), C(vars).
  type: list
  elements: dict
  returned: success
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("env_plan")


if __name__ == "__main__":
    main()
