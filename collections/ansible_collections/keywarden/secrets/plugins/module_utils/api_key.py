# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Target-side code of the api_key modules (stdlib only): HTTP requests that answer a status, and nginx's key list.

Messages name secrets, files, URLs and statuses, never a key: a URL never holds one (the catalog refuses `{key}` in
paths), response bodies are never read into a message, and nginx's own output is redacted before it is quoted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import urllib.error
from typing import Any

from ansible.module_utils.urls import open_url

# what a key must be to sit in an nginx map pattern unescaped (every keywarden charset is)
KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_LINE_RE = re.compile(r'^"~\^(?P<pattern>[^"]*)\$"\s+"(?P<id>[^"]*)";$')


class HttpError(Exception):
    """A request that got no HTTP answer (connection refused, TLS, timeout); the message is one line, without a key."""


def http_status(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout: float = 10,
    ca_file: str | None = None,
) -> int:
    """The status an HTTP(S) server answers to one request. ``body`` (a mapping) goes as JSON. The response body is
    read and dropped (it may echo a key)."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    try:
        # Ansible's HTTP client (it verifies TLS; ca_path adds the catalog's CA)
        response = open_url(url, data=data, headers=headers, method=method, timeout=timeout, ca_path=ca_file or None, http_agent="keywarden")
        with response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = str(getattr(exc, "reason", None) or exc).strip().splitlines() or [type(exc).__name__]
        raise HttpError(f"no answer from {url.split('?', maxsplit=1)[0]}: {why[0]}") from None


# ---- nginx: the accepted-key list of one secret, a `map` include file -------------------------------------------
def pattern(scheme: str, value: str) -> str:
    """What the request header holds for this key: ``<scheme> <key>`` or the key alone."""
    return f"{scheme} {value}" if scheme else value


def render_map(name: str, entries: list[tuple[str, str]]) -> str:
    """The include file: one regex line per key (nginx compares plain map strings case-insensitively; a regex is
    exact), its value the key id, so that an access log can show which key a request used."""
    lines = [
        f"# Managed by keywarden (keywarden.secrets.api_key_nginx): the API keys nginx accepts for secret {name}.",
        "# Include it in a map whose source is the key's request header; the map's value is the key id. Do not edit.",
    ]
    lines += [f'"~^{key}$" "{key_id}";' for key, key_id in entries]
    return "\n".join(lines) + "\n"


def parse_map(text: str) -> list[tuple[str, str]]:
    """(pattern, key id) of each line of a file written by render_map; ValueError naming the first line that is not."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if not match:
            raise ValueError(f"line {number} was not written by keywarden")
        entries.append((match.group("pattern"), match.group("id")))
    return entries


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    """Temp file in the same directory, fsync, rename: nginx never reads half a file."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".keywarden.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def redact(text: str, values: list[str]) -> str:
    for value in values:
        if value:
            text = text.replace(value, "<key>")
    return text


def process_start(pid: int) -> float:
    """When a process started (epoch seconds, to the kernel's clock tick); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0.0
    booted = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return booted + ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (nginx's workers, cache manager and loader)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.add(int(entry))
    return found


def _accepting(pid: int) -> bool:
    """Whether an old nginx child may still accept connections: alive and not yet 'shutting down' (a worker sets that
    title as it closes its listening sockets on a graceful reload)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"shutting down" not in handle.read()
    except OSError:
        return False


def nginx_master(pid_file: str) -> int:
    try:
        with open(pid_file, encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        raise RuntimeError(f"nginx is not running (no live process in pid file {pid_file}); start it, or set keywarden_target_api_key_nginx_pid_file") from None
    return pid


def nginx_check(binary: str, conf: str, values: list[str]) -> None:
    """`nginx -t`: the configuration with the new key files parses. Its first error line, keys redacted, on failure."""
    try:
        done = subprocess.run([binary, "-t", "-q", "-c", conf], capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise RuntimeError(f"cannot run {binary} ({exc.strerror}); install nginx or set keywarden_target_api_key_nginx_binary") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        first = next((line for line in lines if "emerg" in line or "error" in line), lines[0] if lines else f"exit status {done.returncode}")
        raise RuntimeError(f"nginx -t refused the configuration: {redact(first.strip(), values)}")


def nginx_reload(binary: str, conf: str, pid_file: str, timeout: float) -> None:
    """`nginx -s reload`, then wait until the reload took effect: new workers run and every old one has stopped
    accepting connections (it finishes the requests it has: nothing in flight is dropped). A master that rejected the
    new configuration keeps its old workers: that is an error after ``timeout`` seconds."""
    master = nginx_master(pid_file)
    before = children(master)
    try:
        done = subprocess.run([binary, "-c", conf, "-s", "reload"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise RuntimeError(f"cannot run {binary} ({exc.strerror}); install nginx or set keywarden_target_api_key_nginx_binary") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines() or [f"exit status {done.returncode}"]
        raise RuntimeError(f"nginx -s reload failed: {lines[0]}")
    deadline = time.monotonic() + timeout
    while True:
        now = children(master)
        if now - before and not [pid for pid in before if pid in now and _accepting(pid)]:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"nginx (pid {master}) did not start new workers within {timeout:g} s of the reload; its error log says why")
        time.sleep(0.02)
