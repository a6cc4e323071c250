#!/usr/bin/env python3
"""The test logins of a PostgreSQL rotation: one at a time against TEST_CONCURRENCY at once, side by side.

    python bench/rotation_scale/test_logins.py [--logins 50] [--repeat 7] [--label NAME]

Starts a throwaway PostgreSQL (scripts/demo/postgres: TCP with scram-sha-256 and TLS offered, as in the tests) in a
temp dir, creates the login roles with random passwords, then times ``module_utils/logins.test_logins`` (what
``postgresql_logins`` with ``state: tested`` runs for a rotation's set_test) with one worker (how it ran before) and
with ``TEST_CONCURRENCY`` workers, alternating which goes first. Every run must accept every login; after the
timing, two wrong passwords must be named, in order. Writes results/<stamp>-<label>.md. No password is printed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import yaml

from ansible_collections.keywarden.secrets.plugins.module_utils import logins as logins_utils
from ansible_collections.keywarden.secrets.plugins.modules.postgresql_logins import log_in

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def timed(params: dict, logins: list[dict], workers: int) -> float:
    saved, logins_utils.TEST_CONCURRENCY = logins_utils.TEST_CONCURRENCY, workers
    try:
        start = time.perf_counter()
        refused = logins_utils.test_logins(params, logins, log_in, (psycopg2.Error,))
        elapsed = time.perf_counter() - start
    finally:
        logins_utils.TEST_CONCURRENCY = saved
    if refused:
        raise SystemExit(f"test_logins refused {len(refused)} good logins: {[name for name, _why in refused]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--label", default="test-logins")
    args = parser.parse_args()
    concurrent = logins_utils.TEST_CONCURRENCY
    with tempfile.TemporaryDirectory(prefix="kw-bench-logins-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - the server (user postgres) must traverse it; no value is written here
        subprocess.run([str(REPO / "scripts/demo/postgres"), "start", tmp], check=True, capture_output=True)
        try:
            settings = yaml.safe_load((Path(tmp) / "postgres.yml").read_text())
            port, socket_dir = settings["keywarden_target_postgresql_port"], settings["keywarden_target_postgresql_login_unix_socket"]
            admin = psycopg2.connect(host=socket_dir, port=port, user="postgres", dbname="postgres")
            admin.autocommit = True
            logins = []
            with admin.cursor() as cur:
                for number in range(args.logins):
                    password = secrets.token_urlsafe(24)
                    cur.execute(f"CREATE ROLE bench_l{number:03d} LOGIN PASSWORD %s", (password,))
                    logins.append({"name": f"bench_s{number:03d}", "user": f"bench_l{number:03d}", "password": password})
            admin.close()
            params = {"test_host": "127.0.0.1", "login_port": port, "login_db": "postgres", "ssl_mode": "prefer", "connect_timeout": 10}
            samples: dict[int, list[float]] = {1: [], concurrent: []}
            for repetition in range(args.repeat):
                for workers in (1, concurrent) if repetition % 2 == 0 else (concurrent, 1):
                    samples[workers].append(timed(params, logins, workers))
            wrong = [dict(login, password=secrets.token_urlsafe(24)) if index in (3, args.logins - 1) else login for index, login in enumerate(logins)]
            named = [name for name, _why in logins_utils.test_logins(params, wrong, log_in, (psycopg2.Error,))]
            if named != [logins[3]["name"], logins[-1]["name"]]:
                raise SystemExit(f"test_logins named {named} for two wrong passwords")
            load = os.getloadavg()
        finally:
            subprocess.run([str(REPO / "scripts/demo/postgres"), "stop", tmp], check=False, capture_output=True)
    one, many = statistics.median(samples[1]), statistics.median(samples[concurrent])
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M")
    lines = [
        f"# {args.logins} PostgreSQL test logins, 1 vs {concurrent} at once: {args.label} ({stamp}Z)",
        "",
        f"- {os.cpu_count()} CPUs, load average after: {', '.join(f'{value:.2f}' for value in load)}; TLS offered (sslmode prefer), scram-sha-256",
        f"- one at a time: median {one:.3f} s ({', '.join(f'{value:.3f}' for value in samples[1])})",
        f"- {concurrent} at once: median {many:.3f} s ({', '.join(f'{value:.3f}' for value in samples[concurrent])})",
        f"- **one at a time / {concurrent} at once: {one / many:.2f}x**, {args.repeat} runs each, alternating; every good login accepted, "
        "the two wrong passwords named in order",
    ]
    out = HERE / "results" / f"{stamp}-{args.label}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
