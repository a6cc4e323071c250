#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Requests to an API-key issuer's HTTP API (create, test, revoke a key), each checked against the statuses it may answer."""

from __future__ import annotations

DOCUMENTATION = r"""
module: api_key_http
short_description: Call an API-key issuer's HTTP API (create, test, revoke keys) and check each answer's status
description:
  - Sends O(calls) in order, each to O(base_url) plus its C(path), and checks the status against the call's C(expect).
    A secret's calls stop at its first unexpected answer; the other secrets' calls go on, and the module fails naming
    each failed secret in RV(failures).
  - Headers and bodies carry keys and admin tokens, so they are never logged, and a message names the secret, the
    call's C(op), its method and the status, never a URL path (it may hold a key id), a header or a body. Response
    bodies are read and dropped.
  - keywarden's rotation engine runs it through the C(api_key) driver of C(keywarden.secrets.target) (provider C(http)),
    which builds the calls from the catalog and reads the keys and the admin token from the store; call it directly
    only with values from a vault, in a task with C(no_log) set.
version_added: 0.5.0
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: Sends only the calls whose C(op) is C(test) or C(refused) (GET requests with a key); reports the others as changes.
  diff_mode:
    support: none
    description: Results hold names and statuses, never headers, bodies or keys.
options:
  base_url:
    description: URL the call paths are relative to.
    type: str
    required: true
  calls:
    description: The requests, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the secret (what RV(failures) names).
        type: str
        required: true
      op:
        description: What the call does; C(create) and C(revoke) change the issuer, C(test) and C(refused) only read.
        type: str
        required: true
        choices: [create, revoke, test, refused]
      method:
        description: HTTP method.
        type: str
        default: GET
      path:
        description: Path below O(base_url).
        type: str
        required: true
      headers:
        description: Request headers (the key, or the admin token).
        type: dict
        default: {}
      body:
        description: JSON object sent as the body.
        type: dict
      expect:
        description: Statuses that mean success.
        type: list
        elements: int
        required: true
  timeout:
    description: Seconds to wait for each answer.
    type: float
    default: 10
  ca_file:
    description: CA bundle that signs the issuer's certificate; empty for the system's.
    type: path
"""

EXAMPLES = r"""
- name: Create a key at the issuer (the rotation engine builds these calls from the catalog and the store)
  keywarden.secrets.api_key_http:
    base_url: https://issuer.example.invalid/v1
    calls:
      - name: payments_api_key
        op: create
        method: POST
        path: /keys
        headers: {Authorization: "Bearer {{ admin_token }}"}
        body: {id: kw-20261128-3fa2c1d0, key: "{{ new_key }}"}
        expect: [200, 201, 409]
  no_log: true
"""

RETURN = r"""
changed_names:
  description: Secrets the issuer changed for (a create answered 201 or 202, a revoke 2xx), or would, in check mode.
  type: list
  elements: str
  returned: always
failures:
  description: Secret name -> which call got which answer.
  type: dict
  returned: failure
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keywarden.secrets.plugins.module_utils.api_key import HttpError, http_status

ARGUMENT_SPEC = {
    "base_url": {"type": "str", "required": True},
    "calls": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "name": {"type": "str", "required": True},
            "op": {"type": "str", "required": True, "choices": ["create", "revoke", "test", "refused"]},
            "method": {"type": "str", "default": "GET"},
            "path": {"type": "str", "required": True, "no_log": False},
            "headers": {"type": "dict", "default": {}, "no_log": True},
            "body": {"type": "dict", "no_log": True},
            "expect": {"type": "list", "elements": "int", "required": True},
        },
    },
    "timeout": {"type": "float", "default": 10},
    "ca_file": {"type": "path"},
}
_WHAT = {"create": "creating the key", "revoke": "revoking the key", "test": "a request with the key", "refused": "a request with the revoked key"}


def _changed(op: str, status: int) -> bool:
    """Whether an answer says the issuer changed: 201/202 to a create (200 and 409: it had the key already), 2xx to a
    revoke (404 and 410: it was gone already). So a second provisioning run reports no change."""
    return (op == "create" and status in (201, 202)) or (op == "revoke" and 200 <= status < 300)


def send(params: dict, check_mode: bool) -> tuple[list[str], dict[str, str]]:
    changed: list[str] = []
    failures: dict[str, str] = {}
    base = params["base_url"].rstrip("/")
    for call in params["calls"]:
        name = call["name"]
        if name in failures:
            continue
        if check_mode and call["op"] in ("create", "revoke"):
            changed.append(name)
            continue
        try:
            status = http_status(base + call["path"], call["method"].upper(), call["headers"], call["body"], params["timeout"], params["ca_file"])
        except HttpError as exc:
            failures[name] = f"{_WHAT[call['op']]}: {exc}"
            continue
        if status not in call["expect"]:
            failures[name] = f"{_WHAT[call['op']]} ({call['method'].upper()}): the issuer answered {status}, expected {' or '.join(map(str, call['expect']))}"
        elif _changed(call["op"], status) and name not in changed:
            changed.append(name)
    return changed, failures


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    changed, failures = send(module.params, module.check_mode)
    if failures:
        detail = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
        module.fail_json(msg=f"{len(failures)} secrets failed at the issuer: {detail}", failures=failures, changed=bool(changed), changed_names=changed)
    module.exit_json(changed=bool(changed), changed_names=changed, msg=f"{len(module.params['calls'])} calls answered as expected")


if __name__ == "__main__":
    main()
