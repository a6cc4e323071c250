# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rotation engine's state machine: the one owner of every rotation decision.

Per secret: create -> set -> test -> distribute -> finish (see docs/security/secrets/rotation.md). Everything here is
a pure function of the decrypted store data, the catalog, the inventory's groups and what the targets reported; the
caller (action plugin `keywarden.secrets.rotation`) persists each phase with one `Store.update()` for all secrets.

- ``plan``: what is due, requested or resumed, and what is due but cannot be rotated (blocked); ``begin`` writes each
  pending value *before* any target is touched, together with the run's lease lock.
- ``decide``: after set/test on the targets, per secret: distribute, roll back (alone: the others go on), or keep
  pending for the next run; which hosts are consumers, and which must clean up (rollbacks, retirements).
- ``finish``: promote what was distributed, abandon what every target rolled back, record retirements, release the lock.

The run lock is a record in the store itself (``rotation_lock``): taken by the same atomic write as the pending values,
with the holder's identity (host, pid, AWX job) and a lease. A holder that is provably gone (same host, process dead)
or whose lease ran out is taken over; anything else is refused with a message naming the holder. It therefore works
wherever the store lives (a local file, or a store whose writes are commits pushed to a shared remote).
"""

from __future__ import annotations

import calendar
import getpass
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import DISTRIBUTING, StoreError, utcnow

CREATED = "created"
# `distributing` is the point of no return: from there on a rotation only rolls forward.
STEPS = (CREATED, DISTRIBUTING)
DEFAULT_LEASE_SECONDS = 4 * 3600
LOCK_KEY = "rotation_lock"


def epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# ---- what this run rotates ------------------------------------------------------------------------------
def age_due(entry: dict[str, Any], stored: dict[str, Any], now: float) -> bool:
    """The default rule of what is due: the current value is older than the policy's max_age_days."""
    return (now - epoch(stored["current"].get("created"))) / 86400 >= entry["policy"]["max_age_days"]


def plan(
    catalog_env: dict[str, Any],
    data: dict[str, Any],
    only: list[str] | None,
    can_rotate: Callable[[dict[str, Any], dict[str, Any]], str | None],
    now: float | None = None,
    due: Callable[[dict[str, Any], dict[str, Any], float], bool] = age_due,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rotations, blocked). Rotations: resumed (a pending value exists), requested (``only``), or due.

    ``due(entry, stored, now)`` says whether a secret is due (default: by age; a driver may add its own rule, e.g. a
    certificate's remaining lifetime). ``can_rotate(entry, stored)`` returns None when a driver can rotate the entry,
    else the reason (and what to do instead). Blocked: due (or requested) secrets that cannot be rotated; the run
    fails naming them, it never skips them silently.
    """
    now = time.time() if now is None else now
    only = [name for name in (only or []) if name]
    unknown = [name for name in only if name not in catalog_env]
    if unknown:
        raise StoreError(
            f"keywarden_rotate_only names {', '.join(unknown)}, not in the catalog for environment '{data.get('environment')}'; "
            f"known: {', '.join(sorted(catalog_env)) or 'none'}"
        )
    missing = [name for name in only if name not in data["secrets"]]
    if missing:
        raise StoreError(f"keywarden_rotate_only names {', '.join(missing)}, not in the store yet; run playbooks/init.yml first")
    rotations, blocked = [], []
    for name, entry in sorted(catalog_env.items()):
        stored = data["secrets"].get(name)
        if stored is None:
            continue
        pending = stored.get("pending")
        age_days = (now - epoch(stored["current"].get("created"))) / 86400
        if pending:
            reason = "resume"
        elif name in only:
            reason = "requested"
        elif not only and due(entry, stored, now):
            reason = "due"
        else:
            continue
        why_not = can_rotate(entry, stored)
        if why_not:
            blocked.append({"name": name, "kind": entry["kind"], "reason": reason, "age_days": round(age_days, 1), "why": why_not})
            continue
        rotations.append(
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
    return rotations, blocked


def due_retirements(data: dict[str, Any], names: Mapping[str, Any], now: float | None = None) -> list[str]:
    """Secrets of ``names`` whose previous value is scheduled for retirement and due (its overlap window is over)."""
    now = time.time() if now is None else now
    due = []
    for name in sorted(names):
        previous = (data["secrets"].get(name) or {}).get("previous") or {}
        if previous.get("retire_after") and not previous.get("retired") and epoch(previous["retire_after"]) <= now:
            due.append(name)
    return due


def begin(data: dict[str, Any], names: list[str], new_fields: Callable[[str, dict[str, Any]], dict[str, str]]) -> list[str]:
    """Create step: a fresh pending value for each name that has none (``new_fields(name, current_fields)``).

    A pending value left by an interrupted run is kept: the target may already accept it, consumers may hold it.
    """
    created = []
    for name in names:
        stored = data["secrets"][name]
        if stored.get("pending"):
            continue
        current = stored["current"]
        now = utcnow()
        stored["pending"] = {"version": current["version"] + 1, "created": now, "started": now, "step": CREATED, "fields": new_fields(name, current["fields"])}
        created.append(name)
    return created


# ---- after set/test: what each rotation does next ------------------------------------------------------
def decide(
    rotations: list[dict[str, Any]],
    groups: Mapping[str, list[str]],
    reports: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Sort the rotations by what each target host reported (``reports[host][name]``).

    A report is ``{"ok": bool, "reason": str, "holds": bool}``: ``holds`` says the pending value works at that host
    and must be undone before it is forgotten (the driver knows: single-user logins, Redis passwords; never for an
    alternating login nobody uses). Returns ``distribute`` (every target host set and tested it), and for the others
    ``failed`` (name -> host -> reason), split into ``abandon`` (safe to forget now), ``rollback`` (name -> the target
    hosts that must undo it first; abandoned once they have) and ``keep`` (past the point of no return, or a host that
    never answered: the next run resumes it).
    """
    out: dict[str, Any] = {"distribute": [], "abandon": [], "rollback": {}, "keep": [], "failed": {}}
    for item in rotations:
        name = item["name"]
        if not item["target_group"]:
            # nothing to set anywhere (a value only its consumers hold): distribute it
            out["distribute"].append(name)
            continue
        hosts = list(groups.get(item["target_group"], []))
        got = {host: (reports.get(host) or {}).get(name) for host in hosts}
        if hosts and all(report and report.get("ok") for report in got.values()):
            out["distribute"].append(name)
            continue
        reasons = {host: (report or {}).get("reason") or "no report from this host (unreachable, or its task failed)" for host, report in got.items()}
        failed = {host: why for host, why in reasons.items() if not (got[host] or {}).get("ok")}
        out["failed"][name] = failed or {f"group {item['target_group']}": "no host in the inventory"}
        if item["step"] == DISTRIBUTING:
            out["keep"].append(name)  # consumers may hold it: roll forward on the next run
            continue
        # hosts where the pending value still works and must be undone (the driver says, per host: `holds`)
        holding = [host for host in hosts if (got[host] or {}).get("holds")]
        unreported = [host for host in hosts if not got[host]]
        if unreported:
            out["keep"].append(name)  # a host never answered: whether it holds the value is unknown
        elif holding:
            out["rollback"][name] = holding
        else:
            out["abandon"].append(name)
    return out


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


def promote(data: dict[str, Any], names: list[str], retire_after: Callable[[str], float | None], now: float | None = None) -> dict[str, dict[str, Any]]:
    """Finish step: pending -> current, current -> previous. ``retire_after(name)``: seconds until the outgoing value
    is revoked at the target (None: never; it stays valid until the next rotation replaces it)."""
    now = time.time() if now is None else now
    done = {}
    for name in names:
        stored = data["secrets"][name]
        pending = stored.get("pending")
        if not pending:
            continue
        if pending.get("step") != DISTRIBUTING:
            raise StoreError(f"secret '{name}' cannot be promoted before its pending value was distributed (step {pending.get('step')})")
        previous = dict(stored["current"])
        window = retire_after(name)
        if window is not None:
            previous["retire_after"] = stamp(now + window)
        started = pending.pop("started", None)
        pending.pop("step", None)
        stored["previous"] = previous
        stored["current"] = pending
        stored["pending"] = None
        stored["version"] = pending["version"]
        done[name] = {"from_version": previous["version"], "to_version": pending["version"], "duration_s": round(max(0.0, now - epoch(started)), 1)}
    return done


def retired(data: dict[str, Any], names: list[str]) -> list[str]:
    """Record that each name's previous value was revoked at its targets."""
    marked = []
    for name in names:
        previous = data["secrets"][name].get("previous")
        if previous and not previous.get("retired"):
            previous["retired"] = utcnow()
            marked.append(name)
    return marked


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


# ---- the run and its lease lock ------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/<pid>/stat): a pid and this name one process forever."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def run_identity(pid: int, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Who runs this rotation: the ansible-playbook process ``pid`` on this host, and the AWX job when there is one."""
    environ = os.environ if environ is None else environ
    host = socket.gethostname()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    started = _start_time(pid) or "0"
    return {
        "run": f"{host}:{pid}:{started}",
        "host": host,
        "pid": pid,
        "started": started,
        "user": user,
        "awx_job_id": environ.get("JOB_ID") or environ.get("AWX_JOB_ID") or "",
    }


def holder_text(lock: Mapping[str, Any]) -> str:
    job = f", AWX job {lock['awx_job_id']}" if lock.get("awx_job_id") else ""
    return f"pid {lock.get('pid')}, user {lock.get('user')} on {lock.get('host')}{job}, since {lock.get('since')}, lease until {lock.get('lease_until')}"


def _gone(lock: Mapping[str, Any], me: Mapping[str, Any], now: float) -> str | None:
    """Why a lock's holder is provably gone (its lease ran out; or on this host, its process is gone), else None."""
    if epoch(lock.get("lease_until")) <= now:
        return "its lease ran out"
    if lock.get("host") == me["host"] and _start_time(int(lock.get("pid") or 0)) != lock.get("started"):
        return "its process on this host is gone"
    return None


def check_lock(data: dict[str, Any], me: Mapping[str, Any], environment: str, now: float | None = None) -> dict[str, Any] | None:
    """Raise when another live run holds the lock; return a dead holder's lock (to be taken over), else None."""
    now = time.time() if now is None else now
    lock = data.get(LOCK_KEY)
    if not lock or lock.get("run") == me["run"]:
        return None
    why = _gone(lock, me, now)
    if why is None:
        raise StoreError(
            f"a rotation of environment '{environment}' is already running ({holder_text(lock)}); wait for it to finish, "
            f"or for its lease to run out if that run is gone"
        )
    return {**lock, "gone": why}


def take_lock(data: dict[str, Any], me: Mapping[str, Any], environment: str, lease_seconds: float, now: float | None = None) -> dict[str, Any] | None:
    """Take (or renew) the lock for run ``me``; returns the dead holder taken over, if any."""
    now = time.time() if now is None else now
    taken_over = check_lock(data, me, environment, now)
    held = data.get(LOCK_KEY) or {}
    since = held.get("since") if held.get("run") == me["run"] else utcnow()
    data[LOCK_KEY] = {**me, "since": since, "lease_until": stamp(now + lease_seconds)}
    return taken_over


def holds_lock(data: dict[str, Any], me: Mapping[str, Any], environment: str) -> None:
    """Raise unless run ``me`` still holds the lock (another run took it over after this one's lease ran out)."""
    lock = data.get(LOCK_KEY) or {}
    if lock.get("run") != me["run"]:
        other = f"it is held by {holder_text(lock)}" if lock else "nobody holds it"
        raise StoreError(f"this run lost the rotation lock of environment '{environment}' ({other}); its lease ran out: raise keywarden_rotate_lease")


def release_lock(data: dict[str, Any], me: Mapping[str, Any]) -> bool:
    if (data.get(LOCK_KEY) or {}).get("run") == me["run"]:
        data[LOCK_KEY] = None
        return True
    return False
