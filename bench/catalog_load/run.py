#!/usr/bin/env python3
"""Cost of refusing duplicate keys in the catalog: load_catalog's loader against the plain ones, side by side.

    python bench/catalog_load/run.py [--secrets 50,500,2000] [--repeat 15] [--label NAME]

For catalogs of N api_key/postgresql entries (generated in a temp dir, no value in them), times, interleaved,
R times each (median):
  plain-c     yaml.load with libyaml's CSafeLoader (what the catalog used before; the store still uses it)
  checked-c   CatalogLoader: libyaml's parser plus the duplicate-key check in construct_mapping (what load_catalog uses)
  checked-py  the same check on PyYAML's pure-Python SafeLoader (the fallback without libyaml)
and load_catalog end to end (checked-c plus validation). Writes results/<stamp>-<label>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CatalogLoader, UniqueKeys, load_catalog

HERE = Path(__file__).resolve().parent


class PyCheckedLoader(UniqueKeys, yaml.SafeLoader):
    """The same check on the pure-Python parser."""


def catalog(count: int) -> dict[str, Any]:
    secrets: dict[str, Any] = {}
    for i in range(count):
        if i % 2:
            secrets[f"k{i:05d}"] = {
                "kind": "api_key",
                "description": "bench key",
                "environments": ["bench"],
                "policy": {"max_age_days": 180, "length": 32, "charset": "urlsafe"},
                "consumers": [{"group": "app", "service": f"svc{i % 40}", "env": {f"K{i:05d}": "value"}}],
            }
        else:
            secrets[f"d{i:05d}"] = {
                "kind": "postgresql",
                "environments": ["bench", "production"],
                "target": {"group": "db", "database": "orders", "role": f"r{i:05d}"},
                "consumers": [
                    {"group": "app", "service": f"svc{i % 40}", "env": {f"D{i:05d}_USER": "username", f"D{i:05d}_PASSWORD": "password"}},
                ],
            }
    return {"keywarden_catalog_version": 1, "secrets": secrets}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--secrets", default="50,500,2000")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--label", default="local")
    args = parser.parse_args()
    sizes = [int(n) for n in args.secrets.split(",")]
    loaders = {"plain-c": yaml.CSafeLoader, "checked-c": CatalogLoader, "checked-py": PyCheckedLoader}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kw-catalog-bench-") as tmp:
        for size in sizes:
            path = Path(tmp) / f"catalog-{size}.yml"
            path.write_text("---\n" + yaml.safe_dump(catalog(size), sort_keys=False))
            raw = path.read_bytes()
            samples: dict[str, list[float]] = {name: [] for name in [*loaders, "load_catalog"]}
            for rep in range(args.repeat):
                order = list(samples)
                order = order[rep % len(order) :] + order[: rep % len(order)]
                for name in order:
                    start = time.perf_counter()
                    if name == "load_catalog":
                        load_catalog(str(path))
                    else:
                        yaml.load(raw, Loader=loaders[name])  # noqa: S506 - safe loaders only
                    samples[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(values) for name, values in samples.items()}
            results[str(size)] = {
                "bytes": len(raw),
                "median_ms": {name: round(value * 1000, 2) for name, value in medians.items()},
                "samples_ms": {name: [round(v * 1000, 2) for v in values] for name, values in samples.items()},
                "ratio_checked_c_over_plain_c": round(medians["checked-c"] / medians["plain-c"], 2),
                "ratio_checked_py_over_plain_c": round(medians["checked-py"] / medians["plain-c"], 2),
            }
            print(
                f"{size:>5} secrets: plain-c {medians['plain-c'] * 1000:.1f} ms, checked-c {medians['checked-c'] * 1000:.1f} ms "
                f"({results[str(size)]['ratio_checked_c_over_plain_c']}x), checked-py {medians['checked-py'] * 1000:.1f} ms "
                f"({results[str(size)]['ratio_checked_py_over_plain_c']}x), load_catalog {medians['load_catalog'] * 1000:.1f} ms",
                flush=True,
            )
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    meta = {"stamp": stamp, "label": args.label, "repeat": args.repeat, "python": platform.python_version(), "pyyaml": yaml.__version__}
    meta["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stamp}-{args.label}.json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    lines = [
        f"# catalog load, {stamp} ({args.label}), median of {args.repeat}, load average {meta['loadavg']}",
        "",
        "| secrets | bytes | plain-c ms | checked-c ms | checked-c / plain-c | checked-py ms | checked-py / plain-c | load_catalog ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, row in results.items():
        m = row["median_ms"]
        lines.append(
            f"| {size} | {row['bytes']} | {m['plain-c']} | {m['checked-c']} | {row['ratio_checked_c_over_plain_c']} | {m['checked-py']} | "
            f"{row['ratio_checked_py_over_plain_c']} | {m['load_catalog']} |"
        )
    (out / f"{stamp}-{args.label}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
