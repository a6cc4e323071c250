"""Issue 10 item 4: with ANSIBLE_KEEP_REMOTE_FILES on, Ansible leaves each module's arguments on the host in
~/.ansible/tmp. The tasks that carry secret values to a host (.env delivery, the drivers' modules) refuse to run,
naming the setting, and leave no value behind. Values are never compared directly: every file is searched for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def _files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


@pytest.mark.parametrize("playbook", ["playbooks/deploy.yml", "playbooks/provision.yml"])
def test_secret_tasks_refuse_to_run_while_remote_files_are_kept(deployed: Any, tmp_path: Path, playbook: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    before = {path: path.read_bytes() for path in _files_under(deployed.env_dir)}
    run = deployed.run(playbook, env_extra={"ANSIBLE_KEEP_REMOTE_FILES": "1", "HOME": str(home), "ANSIBLE_REMOTE_TMP": str(home / ".ansible" / "tmp")})
    assert run.returncode != 0, run.explain()
    line = run.error_line("ANSIBLE_KEEP_REMOTE_FILES", "keep_remote_files", "unset it")
    assert line, run.explain()
    # nothing delivered, nothing kept: no file Ansible left on the "host" holds a value
    after = {path: path.read_bytes() for path in _files_under(deployed.env_dir)}
    assert after == before
    kept = [path for path in _files_under(home) if deployed.leaks(path.read_text(errors="replace"))]
    assert kept == []
    assert not deployed.leaks(run.output)
