# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A rotation run's scratch record on the controller: what each phase decided and what each target host reported.

The plays of one `ansible-playbook` run share it (every action of the run finds it from the run's identity); it
holds names, hosts, steps and reasons, never a value. It is not the record of truth: the store is. A run that dies
leaves its journal behind, and the next run ignores it (it resumes from the store); journals older than a day are
removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from typing import Any

_MAX_AGE = 86400


def _directory() -> str:
    path = os.path.join(tempfile.gettempdir(), f"keywarden-runs-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{path} must be a directory of this user with mode 0700")
    return path


class Journal:
    def __init__(self, environment: str, run: str) -> None:
        digest = hashlib.sha256(f"{environment}\0{run}".encode()).hexdigest()[:24]
        self.path = os.path.join(_directory(), f"{environment}-{digest}.jsonl")

    def add(self, phase: str, host: str | None = None, **record: Any) -> None:
        line = (json.dumps({"phase": phase, "host": host, **record}, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)

    def records(self, phase: str) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return []
        return [record for record in map(json.loads, lines) if record.get("phase") == phase]

    def last(self, phase: str) -> dict[str, Any]:
        found = self.records(phase)
        return found[-1] if found else {}

    def reports(self, phase: str) -> dict[str, dict[str, Any]]:
        """host -> secret name -> report, for a per-host phase (the last report of each host wins)."""
        return {record["host"]: record.get("reports") or {} for record in self.records(phase)}

    def start(self) -> None:
        """A fresh journal for this run; old ones of dead runs go."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        directory = os.path.dirname(self.path)
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                if time.time() - os.stat(path).st_mtime > _MAX_AGE:
                    os.unlink(path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
