"""Crash injection for the rotation crash tests: a process started with ``PYTHONPATH=tests/faults`` and
``KEYWARDEN_TEST_CRASH=<point>:<n>`` dies with SIGKILL at ``point`` of the n-th store write of the run.

Nothing of this ships: the product has no fault hooks. It wraps the OS calls a store write is made of (the temp
file ``.secrets.vault.tmp.*`` is opened, written, renamed over the store), so it hits the real code path wherever
it lives. Store writes are counted across the run's processes in the file ``KEYWARDEN_TEST_CRASH_COUNTER``.

Points: ``store-mid-write`` (half the temp file written), ``store-before-rename``, ``store-after-rename`` (the
writer dies: ansible-playbook then stops the run, "A worker was found in a dead state"), ``run-after-write``
(ansible-playbook and the writer die right after the rename: a controller that crashed between two phases), and
``audit-mid-append`` (half of the n-th append to an audit log, a ``*.log`` file opened for appending, written).
Git store backend: ``git-before-push`` and ``git-after-push`` kill the whole run (ansible-playbook and the writer)
right before, or right after a successful, n-th ``git push`` of the run: a job killed between a store write and the
next step (pushes are counted in ``<counter>.push``).
``keyfile-replaced`` kills the whole run (ansible-playbook, and the worker with the module) right
after the n-th rename of a temp file ``.keywarden.*`` over an nginx key file ``*.map``: written, not yet reloaded
(renames are counted in ``<counter>.keyfile``).
"""

from __future__ import annotations

import fcntl
import os
import signal

_SPEC = os.environ.get("KEYWARDEN_TEST_CRASH", "")
_TMP = ".secrets.vault.tmp."

if _SPEC:
    _point, _, _nth = _SPEC.partition(":")
    _wanted = int(_nth or 1)
    _counter = os.environ["KEYWARDEN_TEST_CRASH_COUNTER"]
    _open, _write, _replace, _rename = os.open, os.write, os.replace, os.rename
    _state: dict[str, int | None] = {"fd": None, "n": 0, "log_fd": None, "appends": 0}

    def _count(counter: str = _counter) -> int:
        fd = _open(counter, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            number = int(os.pread(fd, 32, 0) or b"0") + 1
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(number).encode(), 0)
        finally:
            os.close(fd)
        return number

    def _die(whole_run: bool) -> None:
        if whole_run:
            os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    def _is_tmp(path: object) -> bool:
        return os.path.basename(os.fsdecode(path)).startswith(_TMP)  # type: ignore[arg-type]

    def _kill_run() -> None:
        # a module runs in its worker's session (the worker calls setsid): kill ansible-playbook, the worker's
        # parent, then the worker's process group (the worker, its shell, this module)
        worker = os.getpgid(0)
        with open(f"/proc/{worker}/stat", encoding="ascii") as stat:
            playbook = int(stat.read().rsplit(")", 1)[1].split()[1])
        os.kill(playbook, signal.SIGKILL)
        os.killpg(worker, signal.SIGKILL)

    def _is_keyfile(src: object, dst: object) -> bool:
        return os.path.basename(os.fsdecode(src)).startswith(".keywarden.") and os.fsdecode(dst).endswith(".map")  # type: ignore[arg-type]

    def _open_hook(path, flags, mode=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
        fd = _open(path, flags, mode, dir_fd=dir_fd)
        if _is_tmp(path) and flags & os.O_CREAT:
            _state["fd"], _state["n"] = fd, _count()
        elif _point == "audit-mid-append" and flags & os.O_APPEND and os.fsdecode(path).endswith(".log"):
            _state["log_fd"] = fd
        return fd

    def _write_hook(fd, data):  # type: ignore[no-untyped-def]
        if _point == "audit-mid-append" and fd == _state["log_fd"] and _count() == _wanted:
            _write(fd, bytes(data)[: len(data) // 2])
            os.fsync(fd)
            _die(False)
        if _point == "store-mid-write" and fd == _state["fd"] and _state["n"] == _wanted:
            _write(fd, bytes(data)[: len(data) // 2])
            os.fsync(fd)
            _die(False)
        return _write(fd, data)

    def _rename_hook(original):  # type: ignore[no-untyped-def]
        def rename(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
            hit = _is_tmp(src) and _state["n"] == _wanted
            if hit and _point == "store-before-rename":
                _die(False)
            result = original(src, dst, *args, **kwargs)
            if hit and _point in ("store-after-rename", "run-after-write"):
                _die(_point == "run-after-write")
            if _point == "keyfile-replaced" and _is_keyfile(src, dst) and _count(_counter + ".keyfile") == _wanted:
                _kill_run()
            return result

        return rename

    os.open, os.write = _open_hook, _write_hook
    os.replace, os.rename = _rename_hook(_replace), _rename_hook(_rename)

    if _point in ("git-before-push", "git-after-push"):
        import subprocess

        _run = subprocess.run

        def _run_hook(args, *rest, **kwargs):  # type: ignore[no-untyped-def]
            if not (isinstance(args, list | tuple) and list(args[:2]) == ["git", "push"]):
                return _run(args, *rest, **kwargs)
            hit = _count(_counter + ".push") == _wanted
            if hit and _point == "git-before-push":
                _die(True)
            result = _run(args, *rest, **kwargs)
            if hit and result.returncode == 0:
                _die(True)
            return result

        subprocess.run = _run_hook
