"""A small real filesystem that tests fill up: a tmpfs mounted on a directory (needs root, as the suite runs).

with Tmpfs(path, size_kib=512) as fs:
    fs.fill()      # a filler file takes every free block: the next write that needs a block gets ENOSPC
    ...
    fs.free()      # the filler is gone: writes succeed again
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from types import TracebackType


class Tmpfs:
    def __init__(self, path: Path, size_kib: int = 512) -> None:
        self.path = path
        self.size_kib = size_kib
        self.filler = path / ".filler"

    def __enter__(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_kib}k,mode=0700", "keywarden-test", str(self.path)], check=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)

    def fill(self) -> int:
        """Take every free block; returns the bytes written. A write then fails with ENOSPC (checked here)."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = b"\0" * 4096
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            # the last page may take a few more bytes
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0"):
                    written += 1
        finally:
            os.close(fd)
        probe = self.path / ".probe"
        try:
            probe.write_bytes(b"x" * 8192)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        else:
            raise AssertionError(f"{self.path} is not full after filling it")
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
