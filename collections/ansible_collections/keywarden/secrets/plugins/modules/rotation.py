#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the rotation action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: rotation
short_description: The controller's phases of a keywarden rotation run (plan, decide, finish)
description:
  - The rotation engine's decisions live in Python (C(plugin_utils/rotation.py)); a play only marks where each phase
    runs. C(playbooks/rotate.yml) runs C(plan), then C(keywarden.secrets.target) C(phase=set_test) on the target hosts,
    C(decide), the C(keywarden_env) role on the consumers, C(keywarden.secrets.target) C(phase=cleanup), then C(finish).
  - O(phase=plan) picks what rotates (a pending value left by an interrupted run, the names in O(only), or what is
    due by C(policy.max_age_days)), and in one atomic store write takes the environment's rotation lock (a lease
    record in the store, naming this run and its AWX job) and persists a fresh pending value for each (the create
    step), before any target is touched. A due secret that no driver can rotate is named in RV(blocked).
  - O(phase=decide) sorts each rotation by what its target hosts reported. One secret's failure rolls back that secret
    only. Tested ones are marked C(distributing), the point of no return.
  - O(phase=finish) promotes what was distributed (C(pending) to C(current), C(current) to C(previous)), forgets what
    every target rolled back, records retired values, releases the lock and reports. RV(failure) names every secret
    that failed or could not be rotated (the playbook fails with it).
  - Results hold names, hosts, versions and reasons, never a value.
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: O(phase=plan) says what would rotate; nothing is written.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  phase:
    description: Which phase of the run.
    type: str
    required: true
    choices: [plan, decide, finish]
  only:
    description: With O(phase=plan), rotate these names now whatever their age (a list, or a comma-separated string).
    type: raw
    default: []
  lease:
    description:
      - Seconds the rotation lock is held for without being renewed (each phase renews it). A run killed without a
        trace on another machine (an AWX job's container) blocks the next rotation for at most this long; on the same
        host a dead run's lock is taken over at once.
    type: float
    default: 14400
"""

EXAMPLES = r"""
- name: Plan the run, take the lock, persist the pending values
  keywarden.secrets.rotation:
    phase: plan
    only: "{{ keywarden_rotate_only }}"
  register: plan
  run_once: true
"""

RETURN = r"""
rotations:
  description: With O(phase=plan), one item per secret to rotate (name, kind, strategy, reason, step, versions, groups).
  type: list
  elements: dict
  returned: when phase is plan
blocked:
  description: With O(phase=plan), secrets that are due (or named) but that no driver can rotate, with the reason.
  type: list
  elements: dict
  returned: when phase is plan
target_hosts:
  description: With O(phase=plan), the hosts that set and test the pending values.
  type: list
  elements: str
  returned: when phase is plan
lines:
  description: With O(phase=plan), what the run does, one line per secret.
  type: list
  elements: str
  returned: when phase is plan
consumer_hosts:
  description: With O(phase=decide), the hosts whose consumers receive a distributed value.
  type: list
  elements: str
  returned: when phase is decide
cleanup_hosts:
  description: With O(phase=decide), the hosts that roll back a failed rotation or retire an outgoing value.
  type: list
  elements: str
  returned: when phase is decide
report:
  description: With O(phase=finish), the run's table (secret, strategy, versions, consumer hosts, time, outcome).
  type: list
  elements: str
  returned: when phase is finish
failure:
  description: With O(phase=finish), empty when everything rotated; else names each failed or blocked secret.
  type: str
  returned: when phase is finish
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("rotation")


if __name__ == "__main__":
    main()
