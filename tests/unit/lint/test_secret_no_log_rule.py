"""The repository's ansible-lint rule keywarden-secret-no-log, run by ansible-lint itself on a good and a bad playbook."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "lint" / "ansible-lint-rules"
LOOKUP = "{{ lookup('keywarden.secrets.secret', 'app_db.password') }}"

PLAYBOOK = f"""---
- name: Secret tasks
  hosts: all
  gather_facts: false
  vars:
    fed: "{LOOKUP}"
  tasks:
    - name: Bad direct
      ansible.builtin.debug:
        msg: "{LOOKUP}"
    - name: Bad through a play variable
      ansible.builtin.debug:
        msg: "{{{{ fed }}}}"
    - name: Good hidden
      ansible.builtin.debug:
        msg: "{{{{ fed }}}}"
      no_log: true
    - name: Good set a fact from it
      ansible.builtin.set_fact:
        copied: "{{{{ fed }}}}"
      no_log: true
    - name: Bad loop over the fact
      ansible.builtin.debug:
        msg: "{{{{ item }}}}"
      loop: "{{{{ [copied] }}}}"
    - name: Good block hides it
      no_log: true
      block:
        - name: Good inside the block
          ansible.builtin.debug:
            msg: "{{{{ fed }}}}"
    - name: Bad task vars fed by the lookup
      ansible.builtin.debug:
        msg: "{{{{ local }}}}"
      vars:
        local: "{LOOKUP}"
    - name: Good unrelated
      ansible.builtin.debug:
        msg: hello
"""


def test_rule_flags_exactly_the_tasks_without_no_log(tmp_path: Path) -> None:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    lint = shutil.which("ansible-lint", path=str(Path(sys.executable).parent)) or "ansible-lint"
    out = subprocess.run(
        [lint, "--offline", "-r", str(RULES), "-R", "-f", "json", "play.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    issues = [i for i in json.loads(out.stdout or "[]") if i["check_name"].startswith("keywarden-secret-no-log")]
    flagged = sorted(i["description"].split("'")[1] for i in issues)
    assert flagged == ["Bad direct", "Bad loop over the fact", "Bad task vars fed by the lookup", "Bad through a play variable"], out.stderr[-2000:]
    assert out.returncode != 0
