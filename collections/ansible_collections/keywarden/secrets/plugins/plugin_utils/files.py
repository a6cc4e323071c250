# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files on the controller: the one atomic write and the one lock file that every keywarden writer uses.

- ``atomic_write``: a temp file beside the target (a dot name, so that no glob or collector picks it up), mode and
  owner set before the content, every byte written, fsync, optionally the outgoing file kept as a hard link, rename
  over the target, fsync of the directory. A crash at any point leaves the old file or the new one, never a torn one.
- ``exclusive_lock``: an flock on a lock file, waited for up to a timeout, released by the kernel when the process
  dies; the holder writes who it is into the file, so a second writer is told who holds it.

(Target-side code uses Ansible's ``AnsibleModule.atomic_move`` instead.)
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any


class LockedError(OSError):
    """Another process holds the lock; ``holder`` describes it."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder}")
        self.path, self.holder = path, holder


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None, keep_old_as: str | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (see the module docstring); OSError on failure, the target untouched.

    ``keep_old_as``: hard-link the outgoing file there first (an encrypted revision kept without a copy or a window).
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if keep_old_as and os.path.exists(path):
            with contextlib.suppress(FileExistsError):
                os.link(path, keep_old_as)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # the new file is in place: nothing after this point may report it as not written
    with contextlib.suppress(OSError):
        fsync_dir(directory)


def remove_crashed_temps(path: str) -> None:
    """The temp files that crashed writers of ``path`` left (call it holding the lock that serialises the writers)."""
    directory, name = os.path.split(os.path.abspath(path))
    for entry in os.listdir(directory):
        if entry.startswith(f".{name}.tmp."):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


def _holder_text(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"{info['what']} (pid {info['pid']}, user {info['user']} on {info['host']}, since {info['since']})"
    except (ValueError, KeyError, OSError):
        return "another process"


@contextlib.contextmanager
def exclusive_lock(path: str, timeout: float = 0.0, what: str = "keywarden") -> Iterator[None]:
    """Hold ``path`` (created 0600) exclusively; wait up to ``timeout`` seconds, then raise LockedError naming the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(path, _holder_text(fd)) from None
                time.sleep(0.1)
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        info: dict[str, Any] = {"pid": os.getpid(), "user": user, "host": socket.gethostname(), "what": what}
        info["since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # who holds it, for the message of the next writer: best effort (a full disk must not stop the lock)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
