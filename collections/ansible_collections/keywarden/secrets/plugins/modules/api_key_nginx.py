#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The API keys nginx accepts, one `map` include file per secret; a graceful reload; requests with a key."""

from __future__ import annotations

DOCUMENTATION = r"""
module: api_key_nginx
short_description: Make nginx accept and refuse API keys (a map include file per secret, graceful reload), and test them
description:
  - With O(state=present), for each secret of O(lists), adds the keys of its C(accept) and removes those of its
    C(revoke) in the file C(<keys_dir>/<name>.map), one line per key C("~^<header value>$" "<key id>";) (a regex, as
    nginx compares plain map strings case-insensitively). Each file is written atomically (mode 0600). When a file
    changed, or is newer than nginx's workers (a run that died between writing and reloading), C(nginx -t) checks the
    configuration (a refusal puts the previous files back) and C(nginx -s reload) applies it; the module then waits
    until new workers run and every old one has stopped accepting connections. Old workers finish the requests they
    have, so nothing in flight is dropped.
  - The nginx configuration includes each file in a C(map) whose source is the key's request header, e.g.
    C(map $http_x_api_key $api_key_id { default ""; include /etc/nginx/keywarden/payments_api_key.map; }), and refuses a
    request whose C($api_key_id) is empty (C(if ($api_key_id = "") { return 401; })).
  - O(probes) (with O(state=tested), or after the reload with O(state=present)) send a GET with a key and check that
    nginx answers 2xx (C(accepted=true)) or 401/403 (C(accepted=false)).
  - One secret's failure does not stop the others; the module then fails naming each in RV(failures). Messages never
    hold a key (nginx's own output is redacted before it is quoted).
  - keywarden's rotation engine runs it through the C(api_key) driver of C(keywarden.secrets.target), which reads the
    keys from the store; call it directly only with values from a vault, in a task with C(no_log) set.
version_added: 0.5.0
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: Reports which files would change; writes, reloads and probes nothing.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or keys.
options:
  state:
    description: C(present) writes the key files and reloads nginx; C(tested) only sends the O(probes).
    type: str
    default: present
    choices: [present, tested]
  lists:
    description: Per secret, the keys to accept and to revoke (O(state=present)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the secret in the catalog; the file is C(<name>.map).
        type: str
        required: true
      scheme:
        description: Word before the key in the request header (C(Bearer)); empty when the header holds the key alone.
        type: str
        default: ""
      accept:
        description: Keys nginx must accept (added when missing; a line with the same id or key is replaced).
        type: list
        elements: dict
        default: []
        suboptions:
          id:
            description: Key id (letters, digits, C(.), C(_), C(-)), the map's value.
            type: str
            required: true
          value:
            description: The key (letters, digits, C(_), C(-)).
            type: str
            required: true
      revoke:
        description: Keys nginx must refuse (their lines are removed, found by id or by key).
        type: list
        elements: dict
        default: []
        suboptions:
          id:
            description: Key id.
            type: str
            required: true
          value:
            description: The key.
            type: str
            required: true
  probes:
    description: Requests with a key, and whether nginx must accept it.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the secret (what RV(failures) names).
        type: str
        required: true
      url:
        description: URL of the GET.
        type: str
        required: true
      header:
        description: Request header that carries the key.
        type: str
        default: X-API-Key
      value:
        description: The header's value (C(<scheme> <key>) or the key).
        type: str
        required: true
      accepted:
        description: C(true) wants a 2xx answer, C(false) a 401 or 403.
        type: bool
        default: true
  binary:
    description: The nginx program (Debian installs it as /usr/sbin/nginx).
    type: str
    default: /usr/sbin/nginx
  conf:
    description: nginx's main configuration file (C(nginx -c)).
    type: path
    default: /etc/nginx/nginx.conf
  pid_file:
    description: nginx's pid file (its C(pid) directive).
    type: path
    default: /run/nginx.pid
  keys_dir:
    description: Directory of the key files (created mode 0700 when missing).
    type: path
    default: /etc/nginx/keywarden
  reload_timeout:
    description: Seconds to wait for new workers after a reload.
    type: float
    default: 15
  timeout:
    description: Seconds to wait for each probe's answer.
    type: float
    default: 10
  ca_file:
    description: CA bundle that signs nginx's certificate, for https probe URLs; empty for the system's.
    type: path
"""

EXAMPLES = r"""
- name: Accept a second key for payments_api_key (the rotation engine passes the values it read from the store)
  keywarden.secrets.api_key_nginx:
    lists:
      - name: payments_api_key
        accept:
          - {id: kw-20261128-3fa2c1d0, value: "{{ new_key }}"}
  become: true
  no_log: true

- name: Check that nginx accepts it
  keywarden.secrets.api_key_nginx:
    state: tested
    probes:
      - {name: payments_api_key, url: "http://127.0.0.1/payments/", value: "{{ new_key }}"}
  no_log: true
"""

RETURN = r"""
changed_names:
  description: Secrets whose key file changed (or would, in check mode).
  type: list
  elements: str
  returned: always
reloaded:
  description: Whether nginx was reloaded.
  type: bool
  returned: always
failures:
  description: Secret name -> why its keys could not be written, applied or were not answered as expected.
  type: dict
  returned: failure
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keywarden.secrets.plugins.module_utils.api_key import (
    KEY_ID_RE,
    KEY_RE,
    HttpError,
    children,
    http_status,
    nginx_check,
    nginx_master,
    nginx_reload,
    parse_map,
    pattern,
    process_start,
    render_map,
    write_atomic,
)

_KEY = {"id": {"type": "str", "required": True}, "value": {"type": "str", "required": True, "no_log": True}}
ARGUMENT_SPEC = {
    "state": {"type": "str", "default": "present", "choices": ["present", "tested"]},
    "lists": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "name": {"type": "str", "required": True},
            "scheme": {"type": "str", "default": ""},
            "accept": {"type": "list", "elements": "dict", "default": [], "options": _KEY},
            "revoke": {"type": "list", "elements": "dict", "default": [], "options": _KEY},
        },
    },
    "probes": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "name": {"type": "str", "required": True},
            "url": {"type": "str", "required": True},
            "header": {"type": "str", "default": "X-API-Key"},
            "value": {"type": "str", "required": True, "no_log": True},
            "accepted": {"type": "bool", "default": True},
        },
    },
    "binary": {"type": "str", "default": "/usr/sbin/nginx"},
    "conf": {"type": "path", "default": "/etc/nginx/nginx.conf"},
    "pid_file": {"type": "path", "default": "/run/nginx.pid"},
    "keys_dir": {"type": "path", "default": "/etc/nginx/keywarden"},
    "reload_timeout": {"type": "float", "default": 15},
    "timeout": {"type": "float", "default": 10},
    "ca_file": {"type": "path"},
}


def _entries(spec: dict, old: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The file's (pattern, id) lines after this secret's revokes and accepts; unchanged lines keep their place."""
    gone = {pattern(spec["scheme"], key["value"]) for key in spec["revoke"]} | {key["id"] for key in spec["revoke"]}
    wanted = [(pattern(spec["scheme"], key["value"]), key["id"]) for key in spec["accept"]]
    replaced = {value for entry in wanted for value in entry}
    keep = [entry for entry in old if entry in wanted or not ({entry[0], entry[1]} & (gone | replaced))]
    return keep + [entry for entry in wanted if entry not in keep]


def _check_keys(spec: dict) -> str | None:
    for key in spec["accept"] + spec["revoke"]:
        if not KEY_RE.match(key["value"]):
            return "a key holds characters an nginx map pattern cannot hold as they are (allowed: letters, digits, _ and -); use charset alnum, hex or urlsafe"
        if not KEY_ID_RE.match(key["id"]):
            return "a key id holds characters other than letters, digits, ., _ and -"
    if spec["scheme"] and not KEY_RE.match(spec["scheme"]):
        return "the scheme must be one word"
    return None


def write_lists(module: AnsibleModule, params: dict) -> tuple[list[str], bool, dict[str, str]]:
    """Write each secret's file, check and reload nginx when needed. (changed names, reloaded, failures)."""
    failures: dict[str, str] = {}
    planned: list[tuple[str, str, str | None, str]] = []  # name, path, old text, new text
    keys_dir = params["keys_dir"]
    for spec in params["lists"]:
        name, path = spec["name"], os.path.join(keys_dir, f"{spec['name']}.map")
        why = _check_keys(spec)
        if why:
            failures[name] = why
            continue
        try:
            with open(path, encoding="ascii") as handle:
                old_text: str | None = handle.read()
        except FileNotFoundError:
            old_text = None
        except (OSError, UnicodeDecodeError) as exc:
            failures[name] = f"cannot read {path} ({getattr(exc, 'strerror', None) or type(exc).__name__})"
            continue
        try:
            lines = parse_map(old_text or "")
        except ValueError as exc:
            failures[name] = f"{path}: {exc}; remove what keywarden did not write"
            continue
        planned.append((name, path, old_text, render_map(name, _entries(spec, lines))))
    changed = [(name, path, old, new) for name, path, old, new in planned if old != new]
    if module.check_mode:
        return [name for name, _path, _old, _new in changed], False, failures
    values = [key["value"] for spec in params["lists"] for key in spec["accept"] + spec["revoke"]]
    touched = [name for name, _path, _old, _new in planned]
    try:
        if not os.path.isdir(keys_dir):
            os.makedirs(keys_dir, mode=0o700)
        for _name, path, _old, new in changed:
            write_atomic(path, new)
        try:
            master: int | None = nginx_master(params["pid_file"])
        except RuntimeError:
            master = None  # not running: it reads the files when it starts (a first provisioning writes them first)
        # a file newer than nginx's newest worker was never loaded (a run that died between its write and the reload)
        started = max((process_start(pid) for pid in children(master)), default=0.0) if master else 0.0
        stale = master is not None and any(os.stat(path).st_mtime > started for _name, path, _old, _new in planned)
        if changed or stale:
            try:
                nginx_check(params["binary"], params["conf"], values)
            except RuntimeError:
                for _name, path, old, _new in changed:
                    if old is None:
                        os.unlink(path)
                    else:
                        write_atomic(path, old)
                raise
        reload = master is not None and bool(changed or stale)
        if reload:
            nginx_reload(params["binary"], params["conf"], params["pid_file"], params["reload_timeout"])
    except (RuntimeError, OSError) as exc:
        why = str(exc) if isinstance(exc, RuntimeError) else f"cannot write in {keys_dir} ({exc.strerror})"
        failures.update({name: why for name in touched})
        return [], False, failures
    return [name for name, _path, _old, _new in changed], reload, failures


def probe(params: dict) -> dict[str, str]:
    """Each probe's answer against what it expects; name -> reason for the others."""
    failures: dict[str, str] = {}
    for item in params["probes"]:
        if item["name"] in failures:
            continue
        try:
            status = http_status(item["url"], headers={item["header"]: item["value"]}, timeout=params["timeout"], ca_file=params["ca_file"])
        except HttpError as exc:
            failures[item["name"]] = str(exc)
            continue
        if item["accepted"] and not 200 <= status < 300:
            failures[item["name"]] = f"nginx answered {status} to the key at {item['url']} (a key it accepts gets 2xx)"
        elif not item["accepted"] and status not in (401, 403):
            failures[item["name"]] = f"nginx answered {status} to a revoked key at {item['url']} (it must refuse it: 401 or 403)"
    return failures


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    changed: list[str] = []
    reloaded = False
    failures: dict[str, str] = {}
    if params["state"] == "present":
        changed, reloaded, failures = write_lists(module, params)
    if not module.check_mode and (params["state"] == "tested" or not failures):
        for name, why in probe(params).items():
            failures.setdefault(name, why)
    names = sorted({spec["name"] for spec in params["lists"]} | {item["name"] for item in params["probes"]})
    if failures:
        detail = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
        msg = f"{len(failures)} of {len(names)} secrets failed: {detail}"
        module.fail_json(msg=msg, failures=failures, changed=bool(changed), changed_names=changed, reloaded=reloaded)
    msg = f"{len(changed)} key files changed, nginx {'reloaded' if reloaded else 'not reloaded'}"
    module.exit_json(changed=bool(changed), changed_names=changed, reloaded=reloaded, msg=msg)


if __name__ == "__main__":
    main()
