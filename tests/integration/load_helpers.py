"""Helpers of the load tests (test_rotation_load*.py): a client that keeps a consumer busy while a rotation runs, and
the one record each run leaves: a summary line, test properties and, with KEYWARDEN_BENCH_RESULTS=<dir>, a JSON file
(bench/rotation_load/). A record holds counts, times and labels; no value reaches it or an assertion.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotation_helpers import Run, rotate

THREADS = 6
MIN_RATE = 50.0  # operations/s the client must sustain for a run to mean anything


class LoadClient:
    """``threads`` threads (THREADS unless told) running ``operation()`` as fast as they can until the ``with`` block ends. An operation
    re-reads the consumer's .env first (as a consumer restarted by the rotation would) and answers (label, ok): the
    login it got, the status it was answered. Failures are kept with their time, so that a window can be measured;
    an exception (reading the .env) is counted by type only."""

    def __init__(self, threads: int = THREADS) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.successes: Counter[str] = Counter()
        self.failure_labels: Counter[str] = Counter()
        self.failures: list[float] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def operation(self) -> tuple[str, bool]:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                label, ok = self.operation()
            except Exception as exc:  # noqa: BLE001 - reading the .env failed: count it, name only the type
                with self.lock:
                    self.errors.append(type(exc).__name__)
                time.sleep(0.01)
                continue
            with self.lock:
                if ok:
                    self.successes[label] += 1
                else:
                    self.failure_labels[label] += 1
                    self.failures.append(time.monotonic())

    @property
    def total(self) -> int:
        return sum(self.successes.values()) + len(self.failures)

    @property
    def failure_window(self) -> float:
        return round(max(self.failures) - min(self.failures), 1) if self.failures else 0.0

    def __enter__(self) -> LoadClient:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.seconds = time.monotonic() - self.started


def rotate_under_load(client: LoadClient, ws: Any, name: str) -> Run:
    """Rotate ``name`` while the client runs, from a second before the rotation to a second after it. The rotation
    succeeded and the client never failed to read the .env."""
    with client:
        time.sleep(1)  # the client is up to speed before the rotation starts
        run = rotate(ws, only=name)
        time.sleep(1)  # and keeps going once it is over
    assert run.returncode == 0, run.explain()
    assert not client.errors, f"reading the .env failed: {sorted(set(client.errors))}"
    return run


@dataclass
class LoadResult:
    """What a client saw during one rotation. ``labels`` say what ran (strategy, provider) and lead the record;
    ``unit`` names the operations counted (logins, requests); ``tallies`` are the test's own counters (logins by user;
    statuses, keys used), recorded after the common figures."""

    labels: dict[str, str]
    unit: str
    count: int
    failed: int
    seconds: float
    rate: float
    failure_window_s: float
    rotation_s: float
    tallies: dict[str, Any]

    @classmethod
    def of(cls, client: LoadClient, run: Run, labels: dict[str, str], unit: str, tallies: dict[str, Any]) -> LoadResult:
        total = client.total
        return cls(
            labels=labels,
            unit=unit,
            count=total,
            failed=len(client.failures),
            seconds=round(client.seconds, 1),
            rate=round(total / client.seconds, 1),
            failure_window_s=client.failure_window,
            rotation_s=round(run.seconds, 1),
            tallies=tallies,
        )

    def record(self, title: str, tail: str, capsys: Any, record_property: Callable[[str, Any], None]) -> None:
        """The summary line ("rotation load <title>: ..., <tail>", printed past pytest's capture), the figures as test
        properties, and with KEYWARDEN_BENCH_RESULTS=<dir> <dir>/load-<title, spaces as dashes>.json."""
        figures = {
            **self.labels,
            self.unit: self.count,
            "failed": self.failed,
            "seconds": self.seconds,
            "rate": self.rate,
            "failure_window_s": self.failure_window_s,
            **self.tallies,
            "rotation_s": self.rotation_s,
            "threads": THREADS,
        }
        with capsys.disabled():
            print(
                f"\nrotation load {title}: {self.count} {self.unit} in {self.seconds:.1f}s ({self.rate:.0f}/s, {THREADS} threads), "
                f"{self.failed} failed (window {self.failure_window_s:.1f}s), rotation {self.rotation_s:.1f}s, {tail}"
            )
        for key, value in figures.items():
            record_property(key, value)
        out = os.environ.get("KEYWARDEN_BENCH_RESULTS")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / f"load-{title.replace(' ', '-')}.json").write_text(json.dumps(figures, indent=2) + "\n")
