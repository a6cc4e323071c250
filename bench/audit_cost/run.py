#!/usr/bin/env python3
"""Cost of the audit log: a play reading N secrets (default 500) with and without auditing.

    python bench/audit_cost/run.py [--secrets 500] [--repeat 3] [--label NAME]

All in a temp dir (nothing of the repository's inventories or stores is touched):
1. a catalog of N api_key secrets for environment `bench`, an inventory with localhost, a vault password;
   playbooks/init.yml creates the store (untimed);
2. timed, interleaved, R times each, both with the audit log on and off:
   template  one task rendering N lookups (N lookup calls in one worker: N appends, each fsync'ed);
   loop      one task looping over N names, one lookup per item (N worker forks: Ansible's own per-item cost);
   "off" runs a throwaway copy of the collection whose module_utils/audit.py has ENABLED = False: the product
   itself has no switch that turns auditing off;
3. every audited run's log is verified (chain intact, N lines added);
4. writes results/<stamp>-<label>.json and .md: medians, every sample, ratio on/off, per-read cost.
No value is printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CLIENT = REPO / "scripts" / "secrets" / "vault-password-client"
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import verify


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default="local")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kw-audit-bench-"))
    try:
        return run(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, args: argparse.Namespace) -> int:
    names = [f"bench_k{i:04d}" for i in range(args.secrets)]
    catalog = {
        "keywarden_catalog_version": 1,
        "secrets": {
            name: {
                "kind": "api_key",
                "description": "audit bench key",
                "environments": ["bench"],
                "policy": {"max_age_days": 180, "length": 32, "charset": "urlsafe", "strategy": "overlap"},
                "consumers": [{"group": "app", "service": "svc", "env": {name.upper(): "value"}}],
            }
            for name in names
        },
    }
    (root / "catalog.yml").write_text("---\n" + yaml.safe_dump(catalog, sort_keys=False))
    inventory = root / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(
        "---\nall:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        '      ansible_python_interpreter: "{{ ansible_playbook_python }}"\n  children:\n    app:\n      hosts:\n        localhost:\n'
    )
    (inventory / "group_vars" / "all" / "main.yml").write_text(
        yaml.safe_dump({"keywarden_environment": "bench", "keywarden_store_dir": str(root / "store"), "keywarden_catalog_path": str(root / "catalog.yml")})
    )
    (root / "pass").mkdir(mode=0o700)
    (root / "pass" / "bench").write_text(secrets.token_urlsafe(24) + "\n")
    (root / "pass" / "bench").chmod(0o600)
    off = root / "collections-off"
    shutil.copytree(REPO / "collections", off)
    audit_py = off / "ansible_collections" / "keywarden" / "secrets" / "plugins" / "module_utils" / "audit.py"
    text = audit_py.read_text()
    assert "\nENABLED = True\n" in text
    audit_py.write_text(text.replace("\nENABLED = True\n", "\nENABLED = False\n"))
    log = root / "audit" / "audit.log"

    def env(audit: bool) -> dict[str, str]:
        out = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_"))}
        out.update(
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            KEYWARDEN_VAULT_PASSWORD_DIR=str(root / "pass"),
            KEYWARDEN_AUDIT_LOG=str(log),
            KEYWARDEN_AUDIT_KEY_FILE=str(root / "audit" / "audit.key"),
            ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections" if audit else off),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        return out

    def playbook(path: Path, audit: bool = True, *extra: str) -> float:
        start = time.monotonic()
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(path), "--vault-id", f"bench@{CLIENT}", *extra],
            cwd=REPO,
            env=env(audit),
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            print(proc.stdout[-2000:], file=sys.stderr)
            raise SystemExit(f"{path.name} failed (rc {proc.returncode})")
        return seconds

    playbook(REPO / "playbooks" / "init.yml", True, "-e", "keywarden_store_create=true")
    lookup = "lookup('keywarden.secrets.secret', {}, field='value')"
    plays = {
        "template": {
            "name": "copy",
            "ansible.builtin.copy": {
                "content": "{% for n in bench_names %}{{ " + lookup.format("n") + " }}\n{% endfor %}",
                "dest": str(root / "out"),
                "mode": "0600",
            },
            "no_log": True,
            "diff": False,
        },
        "loop": {"name": "loop", "ansible.builtin.set_fact": {"x": "{{ " + lookup.format("item") + " }}"}, "loop": "{{ bench_names }}", "no_log": True},
    }
    files = {}
    for kind, task in plays.items():
        files[kind] = root / f"{kind}.yml"
        play = [{"name": f"read {len(names)} secrets ({kind})", "hosts": "localhost", "gather_facts": False, "vars": {"bench_names": names}, "tasks": [task]}]
        files[kind].write_text("---\n" + yaml.safe_dump(play, sort_keys=False))

    samples: dict[str, list[float]] = {f"{k}-{m}": [] for k in plays for m in ("on", "off")}
    for rep in range(args.repeat):
        order = [(k, m) for k in plays for m in ("on", "off")]
        order = order[rep % len(order) :] + order[: rep % len(order)]
        for kind, mode in order:
            before = verify(str(log))[0] if log.exists() else 0
            seconds = playbook(files[kind], audit=mode == "on")
            count, bad, message = verify(str(log))
            expected = before + (len(names) if mode == "on" else 0)
            if bad is not None or count != expected:
                raise SystemExit(f"audit log after {kind}-{mode}: {message}; {count} lines, expected {expected}")
            samples[f"{kind}-{mode}"].append(round(seconds, 3))
            print(f"rep {rep + 1} {kind:<8} audit {mode:<3} {seconds:6.2f}s", flush=True)

    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "label": args.label,
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "secrets": len(names),
        "repeat": args.repeat,
        "samples_s": samples,
        "median_s": med,
        "ratio_on_off": {k: round(med[f"{k}-on"] / med[f"{k}-off"], 3) for k in plays},
        "per_read_ms": {k: round((med[f"{k}-on"] - med[f"{k}-off"]) / len(names) * 1000, 3) for k in plays},
        "loadavg": os.getloadavg(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stem = out / f"{result['when'].replace(':', '')}-{args.label}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# audit cost, {len(names)} secret reads, {args.repeat} repetitions ({result['when']}, {args.label})",
        "",
        "| play | audit on (median s) | audit off (median s) | ratio on/off | cost per read (ms) |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {k} | {med[f'{k}-on']:.2f} | {med[f'{k}-off']:.2f} | {result['ratio_on_off'][k]} | {result['per_read_ms'][k]} |" for k in plays],
        "",
        f"load average at the end: {', '.join(f'{x:.2f}' for x in result['loadavg'])}; {result['machine']['cpus']} CPUs",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
