# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotation state machine over the store data: create -> set -> test -> distribute -> finish.

Every transition is a pure function of the decrypted store data; the caller persists it through
Store.update(), once per run phase for all secrets (not once per secret). ``pending`` is written
before anything touches a target, so a crash at any later point can be resumed from the store.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import getpass
import json
import os
import socket
import time
from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS, login_names
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import DISTRIBUTING, StoreError, generate_value, utcnow

# Kinds this release can rotate.
ROTATABLE = ("postgresql", "mariadb")
# Steps a pending value goes through; `distributing` is the point of no return (roll forward only).
STEPS = ("created", "tested", DISTRIBUTING)


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def plan(catalog_env: dict[str, Any], data: dict[str, Any], only: list[str] | None, now: float | None = None) -> list[dict[str, Any]]:
    """Which secrets this run rotates, and why: resume (a pending value exists), requested, or due."""
    now = time.time() if now is None else now
    only = [name for name in (only or []) if name]
    unknown = [name for name in only if name not in catalog_env]
    if unknown:
        raise StoreError(
            f"keywarden_rotate_only names {', '.join(unknown)}, not in the catalog for environment '{data.get('environment')}'; "
            f"known: {', '.join(sorted(catalog_env)) or 'none'}"
        )
    not_rotatable = [name for name in only if catalog_env[name]["kind"] not in ROTATABLE]
    if not_rotatable:
        kinds = ", ".join(sorted({catalog_env[n]["kind"] for n in not_rotatable}))
        raise StoreError(f"keywarden_rotate_only names {', '.join(not_rotatable)} of kind {kinds}; this release rotates {', '.join(ROTATABLE)}")
    out = []
    for name, entry in sorted(catalog_env.items()):
        if entry["kind"] not in ROTATABLE:
            continue
        stored = data["secrets"].get(name)
        if stored is None:
            if name in only:
                raise StoreError(f"secret '{name}' is not in the store yet; run playbooks/init.yml first")
            continue
        pending = stored.get("pending")
        age_days = (now - _epoch(stored["current"].get("created"))) / 86400
        if pending:
            reason = "resume"
        elif name in only:
            reason = "requested"
        elif not only and age_days >= entry["policy"]["max_age_days"]:
            reason = "due"
        else:
            continue
        out.append(
            {
                "name": name,
                "kind": entry["kind"],
                "strategy": entry["policy"]["strategy"],
                "reason": reason,
                "step": (pending or {}).get("step", "none"),
                "target_group": entry["target"].get("group"),
                "consumer_groups": sorted({c["group"] for c in entry["consumers"]}),
                "from_version": stored["current"]["version"],
                "to_version": (pending or {}).get("version", stored["current"]["version"] + 1),
                "age_days": round(age_days, 2),
            }
        )
    return out


def begin(data: dict[str, Any], catalog_env: dict[str, Any], names: list[str]) -> list[str]:
    """Create step: a fresh pending value for each name that has none. Returns the names created."""
    created = []
    for name in names:
        stored = data["secrets"][name]
        if stored.get("pending"):
            continue  # resuming: keep the value the interrupted run may already have set at the target
        entry = catalog_env[name]
        current = stored["current"]
        fields = dict(current["fields"])
        policy = entry["policy"]
        fields["password"] = generate_value(policy["length"], CHARSETS[policy["charset"]])
        if policy["strategy"] == "alternating_users":
            first, second = login_names(entry)
            fields["username"] = second if current["fields"].get("username") == first else first
        now = utcnow()
        stored["pending"] = {"version": current["version"] + 1, "created": now, "started": now, "step": "created", "fields": fields}
        created.append(name)
    return created


def mark(data: dict[str, Any], names: list[str], step: str) -> list[str]:
    """Record that each name's pending value reached ``step``."""
    if step not in STEPS:
        raise StoreError(f"unknown rotation step '{step}'")
    marked = []
    for name in names:
        pending = data["secrets"][name].get("pending")
        if pending and pending.get("step") != step:
            pending["step"] = step
            marked.append(name)
    return marked


def promote(data: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """Finish step: pending -> current, current -> previous. Returns versions and durations per name."""
    done = {}
    for name in names:
        stored = data["secrets"][name]
        pending = stored.get("pending")
        if not pending:
            continue
        if pending.get("step") != DISTRIBUTING:
            raise StoreError(f"secret '{name}' cannot be promoted before its pending value was distributed (step {pending.get('step')})")
        previous = stored["current"]
        started = pending.pop("started", None)
        pending.pop("step", None)
        stored["previous"] = previous
        stored["current"] = pending
        stored["pending"] = None
        stored["version"] = pending["version"]
        done[name] = {
            "from_version": previous["version"],
            "to_version": pending["version"],
            "duration_s": round(max(0.0, time.time() - _epoch(started)), 1),
        }
    return done


def abandon(data: dict[str, Any], names: list[str]) -> list[str]:
    """Roll back: forget each pending value that has not started distribution."""
    dropped = []
    for name in names:
        stored = data["secrets"][name]
        pending = stored.get("pending")
        if not pending:
            continue
        if pending.get("step") == DISTRIBUTING:
            raise StoreError(f"secret '{name}' is being distributed; a rotation past that point only rolls forward")
        stored["pending"] = None
        dropped.append(name)
    return dropped


# ---- the run lock: one rotation per environment at a time ------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"ansible" in handle.read()
    except OSError:
        return True


def acquire_run_lock(store_dir: str, environment: str, owner_pid: int, what: str) -> dict[str, Any]:
    """Take the environment's rotation lock for process ``owner_pid`` (the ansible-playbook process).

    A lock whose owner died (a killed run) is taken over; a live owner is named in the error. The
    check-and-take runs under a short flock, so two runs finding the same dead lock cannot both take it.
    """
    os.makedirs(store_dir, mode=0o700, exist_ok=True)
    # the flock is on the store directory itself: no extra file, released when this process exits
    guard = os.open(store_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        return _acquire_run_lock(store_dir, environment, owner_pid, what)
    finally:
        os.close(guard)


def _acquire_run_lock(store_dir: str, environment: str, owner_pid: int, what: str) -> dict[str, Any]:
    path = os.path.join(store_dir, "rotation.lock")
    info = {
        "pid": owner_pid,
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "since": utcnow(),
        "what": what,
        "awx_job_id": os.environ.get("JOB_ID") or os.environ.get("AWX_JOB_ID") or "",
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                with open(path, encoding="utf-8") as handle:
                    holder = json.load(handle)
            except (OSError, ValueError):
                holder = {}
            if holder.get("pid") == owner_pid and holder.get("host") == info["host"]:
                return {"taken_over": None, **holder}
            if holder and holder.get("host") == info["host"] and _alive(int(holder.get("pid", 0))):
                job = f", AWX job {holder['awx_job_id']}" if holder.get("awx_job_id") else ""
                raise StoreError(
                    f"a rotation of environment '{environment}' is already running: {holder.get('what')} "
                    f"(pid {holder.get('pid')}, user {holder.get('user')} on {holder.get('host')}{job}, since {holder.get('since')}); "
                    f"wait for it to finish"
                ) from None
            if holder and holder.get("host") != info["host"]:
                raise StoreError(
                    f"a rotation of environment '{environment}' holds {path} from host {holder.get('host')} (pid {holder.get('pid')}, "
                    f"since {holder.get('since')}); if that run is gone, delete the file"
                ) from None
            # the owner is gone (killed run): take over; its pending values are resumed from the store
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            info["taken_over"] = holder
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({k: v for k, v in info.items() if k != "taken_over"}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return info
    raise StoreError(f"could not take the rotation lock {path}; another run keeps taking it")


def clear_stale_run_lock(store_dir: str) -> dict[str, Any] | None:
    """Remove the run lock of a run that is gone (killed on this host); return that holder, else None.

    A run with nothing to rotate takes no lock, so without this the lock of a run killed before `begin` or
    after `promote` would stay until the next real rotation took it over.
    """
    path = os.path.join(store_dir, "rotation.lock")
    try:
        with open(path, encoding="utf-8") as handle:
            holder = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or holder.get("host") != socket.gethostname() or _alive(int(holder.get("pid", 0))):
        return None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return holder


def release_run_lock(store_dir: str, owner_pid: int) -> bool:
    path = os.path.join(store_dir, "rotation.lock")
    try:
        with open(path, encoding="utf-8") as handle:
            holder = json.load(handle)
    except (OSError, ValueError):
        return False
    if holder.get("pid") != owner_pid or holder.get("host") != socket.gethostname():
        return False
    os.unlink(path)
    return True
