#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the rotation action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: rotation
short_description: Plan, lock and record the steps of a keywarden rotation run (controller side)
description:
  - C(plan) lists the secrets this run rotates and why (C(resume), C(requested), C(due)).
  - C(lock)/C(unlock) hold the environment's rotation lock for the ansible-playbook process; a second run is refused
    with a message naming the holder; the lock of a run that was killed is taken over.
  - C(begin) persists a fresh C(pending) value for each name (the create step) before any target is touched;
    C(mark) records a step; C(promote) moves C(pending) to C(current) and C(current) to C(previous);
    C(abandon) drops a C(pending) that has not started distribution. One atomic store write per call.
author: keywarden contributors
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  op:
    description: What to do.
    type: str
    required: true
    choices: [plan, lock, unlock, begin, mark, promote, abandon]
  names:
    description: Secret names the transition applies to.
    type: list
    elements: str
    default: []
  only:
    description: With C(plan), rotate these names now whatever their age.
    type: list
    elements: str
    default: []
  step:
    description: With C(mark), the step reached.
    type: str
    choices: [created, tested, distributing]
"""

EXAMPLES = r"""
- name: Plan
  keywarden.secrets.rotation:
    op: plan
    only: "{{ keywarden_rotate_only }}"
  register: plan
"""

RETURN = r"""
rotations:
  description: With C(plan), one item per secret to rotate (name, kind, strategy, reason, step, versions).
  type: list
  elements: dict
  returned: when op is plan
result:
  description: Names changed by the transition; with C(promote), versions and duration per name.
  type: raw
  returned: when op is a transition
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("rotation")


if __name__ == "__main__":
    main()
