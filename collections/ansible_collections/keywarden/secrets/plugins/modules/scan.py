# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scan paths on a managed host for hardcoded credentials and secret files with loose modes or owners."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: scan
short_description: Find hardcoded credentials and loosely protected secret files on a host
description:
  - Scans files under O(paths) with keywarden's credential scanner (stdlib only, runs on the managed host).
  - Reports each finding with path, line, rule, severity, a masked excerpt and a fingerprint; never a value.
  - Also reports secret files (files with a finding, or whose name matches O(secret_globs)) whose mode has bits
    beyond O(max_mode) or whose owner is not in O(owners).
  - Read-only; never reports C(changed).
version_added: "1.0.0"
author: keywarden contributors (@keywarden)
options:
  paths:
    description: Files or directories to scan.
    type: list
    elements: path
    required: true
  exclude:
    description: Glob patterns (full path or file name) to skip.
    type: list
    elements: str
    default: []
  baseline:
    description: Fingerprints of accepted findings (as in a scan-secrets baseline); these are not reported.
    type: list
    elements: str
    default: []
  follow_symlinks:
    description: Follow symlinks; loops are detected and reported as warnings.
    type: bool
    default: false
  max_file_size:
    description: Files larger than this many bytes are skipped with a warning.
    type: int
    default: 67108864
  check_modes:
    description: Whether to report secret files with loose modes or unexpected owners.
    type: bool
    default: true
  max_mode:
    description: Widest mode a secret file may have, as an octal string.
    type: str
    default: "0640"
  owners:
    description: Owners a secret file may have; empty means any.
    type: list
    elements: str
    default: [root]
  secret_globs:
    description: File names treated as secret files even without a finding.
    type: list
    elements: str
    default: ["*.env", ".env", "*.key", "*.vault", "*secret*", "*password*", "*.p12", "*.pfx"]
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode runs the same scan.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
"""

EXAMPLES = r"""
- name: Scan configuration and compose stacks
  keywarden.secrets.scan:
    paths: [/etc, /srv]
    exclude: ["/etc/ssl/certs/*"]
    max_mode: "0640"
    owners: [root, app]
  register: __scan
"""

RETURN = r"""
findings:
  description:
    - Credentials found; values never appear, only masked excerpts and fingerprints.
    - C(explain) names the rule and why the value read as neither placeholder nor reference (its length band and
      character classes, never its characters), to help tune a baseline.
  returned: always
  type: list
  elements: dict
  sample:
    - {path: /srv/app/.env, line: 3, rule: hardcoded-password, severity: high, fingerprint: 0f1e..., excerpt: "DB_PASSWORD=********",
       explain: "hardcoded-password: assigned to 'DB_PASSWORD', a name that says credential; value: 16-31 characters of lower-case, digits; ..."}
permission_problems:
  description: Secret files with a mode wider than max_mode or an owner not in owners.
  returned: always
  type: list
  elements: dict
  sample: [{path: /srv/app/.env, problems: ["mode 0644 is wider than 0640"]}]
warnings_list:
  description: Files that could not be scanned and why (unreadable, binary, too large, symlink loop).
  returned: always
  type: list
  elements: str
files_scanned:
  description: Number of files scanned.
  returned: always
  type: int
"""

import fnmatch
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keywarden.secrets.plugins.module_utils import scanner


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path", "required": True},
            "exclude": {"type": "list", "elements": "str", "default": []},
            "baseline": {"type": "list", "elements": "str", "default": []},
            "follow_symlinks": {"type": "bool", "default": False},
            "max_file_size": {"type": "int", "default": scanner.DEFAULT_MAX_FILE_SIZE},
            "check_modes": {"type": "bool", "default": True},
            "max_mode": {"type": "str", "default": "0640"},
            "owners": {"type": "list", "elements": "str", "default": ["root"]},
            # file name patterns, not secrets
            "secret_globs": {
                "type": "list",
                "elements": "str",
                "no_log": False,
                "default": ["*.env", ".env", "*.key", "*.vault", "*secret*", "*password*", "*.p12", "*.pfx"],
            },
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        max_mode = int(params["max_mode"], 8)
    except ValueError:
        module.fail_json(msg=f"max_mode: '{params['max_mode']}' is not an octal mode such as \"0640\"")
    accepted = set(params["baseline"])
    result = scanner.ScanResult()
    scanned = list(scanner.walk(params["paths"], params["exclude"], params["follow_symlinks"], result.warnings.append))
    for path in scanned:
        scanner.scan_file(path, result, path, params["max_file_size"])
    findings = [f for f in result.findings if f.fingerprint not in accepted]

    problems = []
    if params["check_modes"]:
        with_findings = {f.path for f in result.findings}
        for path in scanned:
            name = os.path.basename(path)
            if path in with_findings or any(fnmatch.fnmatch(name, g) for g in params["secret_globs"]):
                why = scanner.mode_problems(path, max_mode, params["owners"])
                if why:
                    problems.append({"path": path, "problems": why})
    module.exit_json(
        changed=False,
        findings=[f.as_dict() for f in findings],
        permission_problems=problems,
        warnings_list=result.warnings,
        files_scanned=result.files_scanned,
    )


if __name__ == "__main__":
    main()
