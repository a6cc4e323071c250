#!/usr/bin/env python3
"""Scanner speed, memory and quality: the engine at a git revision (before) against the working tree (after),
measured in the same run on the same trees, because the shared machine is too noisy for absolute figures.

speed    CPU seconds (the child's own, `time.process_time` around the scan) on real code trees: by default the
         community.general collection (~10 MB, the size the issue's 0.32 s was measured on) and every collection
         the ansible bundle installs in .venv (~196 MB). Before and after alternate, `--rounds` times, each in a
         fresh child pinned to one core; detect-secrets runs once on the first tree (`--no-ds` skips it).
quality  precision and recall per class on the sample-application set (tests/scanner_corpus/sample_apps.py,
         built at run time from `--seed`), both engines; findings per MB by rule on every real tree, both
         engines; with `--review FILE`, the after-findings joined with their hand-review classes.
memory   peak RSS of both engines on synthetic trees of growing size (`--sizes`, MiB; this repository's text
         files plus the Ansible-shaped corpus, copied; findings streamed, not kept): it must stay flat.

Usage:  bench/scanner/bench.py [--before REV] [--tree PATH]... [--rounds N] [--no-ds] [--seed N]
                               [--sizes 4,16] [--review FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
ENGINE = "collections/ansible_collections/keywarden/secrets/plugins/module_utils/scanner.py"
SITE = REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "ansible_collections"
sys.path[:0] = [str(REPO / "tests"), str(REPO / "collections")]

from scanner_corpus import sample_apps  # noqa: E402
from scanner_corpus.detect_secrets_run import detect_secrets_findings  # noqa: E402
from scanner_corpus.generate import build  # noqa: E402

CHILD = r"""
import importlib.util, json, os, resource, sys, time
sys.path[:0] = [sys.argv[3], sys.argv[4]]
tool, root, engine = sys.argv[1], sys.argv[2], sys.argv[5]
start = time.process_time()
if tool == "detect-secrets":
    from scanner_corpus.detect_secrets_run import detect_secrets_findings
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    found = [(path, line, "detect-secrets") for path, line in detect_secrets_findings(files, root)]
    size = sum(os.path.getsize(f) for f in files)
else:
    spec = importlib.util.spec_from_file_location("engine_" + tool, engine)
    scanner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scanner)
    if sys.argv[6] == "count":  # the memory check: findings are handed over, not kept, as the CLI's streaming could
        result = scanner.scan_paths([root], on_finding=lambda f: None)
        found = [("", 0, "")] * result.finding_count
    else:
        result = scanner.scan_paths([root], relative_to=root)
        found = [(f.path, f.line, f.rule) for f in result.findings]
    size = result.bytes_scanned
cpu = time.process_time() - start
print(json.dumps({"tool": tool, "cpu_s": cpu, "bytes": size, "findings": found,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _run(tool: str, root: Path, engine: Path | None, mode: str = "keep") -> dict:
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", CHILD, tool, str(root), str(REPO / "tests"), str(REPO / "collections"), str(engine or ""), mode],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _engines(before: str, tmp: Path) -> dict[str, Path]:
    old = tmp / "scanner_before.py"
    old.write_bytes(subprocess.run(["git", "-C", str(REPO), "show", f"{before}:{ENGINE}"], check=True, capture_output=True).stdout)
    return {"before": old, "after": REPO / ENGINE}


def speed_and_findings(trees: list[Path], engines: dict[str, Path], rounds: int, with_ds: bool) -> dict:
    results: dict = {}
    for tree in trees:
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(rounds):
            for name in ("before", "after"):  # alternate, so drift in machine load hits both alike
                runs[name].append(_run(name, tree, engines[name]))
        entry: dict = {"mib": runs["after"][0]["bytes"] / 2**20, "rounds": rounds}
        for name, rs in runs.items():
            findings = rs[0]["findings"]
            entry[name] = {
                "cpu_s_median": statistics.median(r["cpu_s"] for r in rs),
                "cpu_s_runs": [round(r["cpu_s"], 3) for r in rs],
                "findings": len(findings),
                "findings_per_mib": len(findings) / entry["mib"],
                "by_rule": dict(collections.Counter(rule for _p, _l, rule in findings).most_common()),
            }
        entry["cpu_ratio_after_before"] = entry["after"]["cpu_s_median"] / entry["before"]["cpu_s_median"]
        entry["cpu_ratio_per_round"] = [round(a["cpu_s"] / b["cpu_s"], 3) for a, b in zip(runs["after"], runs["before"], strict=True)]
        if with_ds and tree == trees[0]:
            ds = _run("detect-secrets", tree, None)
            entry["detect_secrets"] = {"cpu_s": ds["cpu_s"], "findings": len(ds["findings"])}
            entry["detect_secrets_over_after"] = ds["cpu_s"] / entry["after"]["cpu_s_median"]
        entry["_after_findings"] = runs["after"][0]["findings"]
        results[os.path.relpath(tree, REPO)] = entry
        ds_note = ""
        if "detect_secrets" in entry:
            ds_note = f"; detect-secrets {entry['detect_secrets']['cpu_s']:.1f} s = x{entry['detect_secrets_over_after']:.0f} ours"
        print(f"{tree}: {entry['mib']:.1f} MiB; cpu before {entry['before']['cpu_s_median']:.2f} s, after {entry['after']['cpu_s_median']:.2f} s "
              f"(x{entry['cpu_ratio_after_before']:.2f}); findings {entry['before']['findings']} -> {entry['after']['findings']}{ds_note}")  # fmt: skip
    return results


def review(findings: list[list], tree: Path, review_file: Path) -> dict:
    """Join after-findings (paths relative to the tree) with the hand-review classes; count what is unreviewed."""
    doc = json.loads(review_file.read_text())
    classes = {(p, line, rule): cls for p, line, rule, cls in doc["findings"]}
    counts: collections.Counter[str] = collections.Counter()
    for path, line, rule in findings:
        counts[classes.get((os.path.relpath(path, tree), line, rule), "unreviewed")] += 1
    return dict(counts.most_common())


def sample_app_quality(engines: dict[str, Path], seed: int, tmp: Path, with_ds: bool) -> dict:
    root = tmp / "apps"
    labels = sample_apps.build(root, seed)
    out = {"seed": seed, "files": len(labels)}
    for name, path in engines.items():
        scanner = _load(path, f"quality_{name}")
        result = scanner.scan_paths([str(root)], relative_to=str(root))
        out[name] = sample_apps.score(labels, {(os.path.relpath(f.path, root), f.line) for f in result.findings})
        print(f"sample apps (seed {seed}), {name}:\n{sample_apps.table(out[name])}")
    if with_ds:
        out["detect_secrets"] = sample_apps.score(labels, detect_secrets_findings([str(root / rel) for rel in labels], str(root)))
        print(f"sample apps (seed {seed}), detect-secrets:\n{sample_apps.table(out['detect_secrets'])}")
    return out


def _repo_text_files() -> list[Path]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], check=True, capture_output=True).stdout.decode().split("\0")
    files = []
    for name in out:
        path = REPO / name
        if name and path.is_file() and not path.is_symlink() and path.stat().st_size < 1_000_000 and b"\0" not in path.read_bytes()[:4096]:
            files.append(path)
    return files


def memory(sizes: list[float], engines: dict[str, Path], tmp: Path) -> list[dict]:
    seed_dir = tmp / "_seed"
    build(seed_dir / "corpus", 7, files_per_format=4)
    for path in _repo_text_files():
        dest = seed_dir / "repo" / path.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    unit = sum(f.stat().st_size for f in seed_dir.rglob("*") if f.is_file())
    rows = []
    for size in sizes:
        tree = tmp / f"mem{size:g}"
        for i in range(max(1, round(size * 2**20 / unit))):
            shutil.copytree(seed_dir, tree / f"copy{i:04d}")
        row: dict = {}
        for name in ("before", "after"):
            r = _run(name, tree, engines[name], "count")
            row.update({"mib": r["bytes"] / 2**20, f"{name}_maxrss_mib": r["maxrss_kib"] / 1024})
        rows.append(row)
        print(f"memory: {row['mib']:.1f} MiB scanned, peak RSS before {row['before_maxrss_mib']:.1f} MiB, after {row['after_maxrss_mib']:.1f} MiB")
        shutil.rmtree(tree)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="main", help="git revision of the engine to compare with (default: main)")
    parser.add_argument("--tree", action="append", type=Path, help="real code tree (repeatable; default: community.general and all collections)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ds", action="store_true", help="skip detect-secrets")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sample-application set")
    parser.add_argument("--sizes", default="4,16", help="synthetic tree sizes in MiB for the memory check ('' to skip)")
    parser.add_argument("--review", type=Path, help="hand-review classes of the after-findings on the last tree")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    trees = args.tree or [SITE / "community" / "general", SITE]
    results: dict = {"python": sys.version.split()[0], "cpu": os.cpu_count(), "when": time.strftime("%Y-%m-%d"), "before": args.before}
    results["before_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.before], check=True, capture_output=True, text=True).stdout.strip()
    results["after_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="kw-bench-") as tmp_name:
        tmp = Path(tmp_name)
        engines = _engines(args.before, tmp)
        results["sample_apps"] = sample_app_quality(engines, args.seed, tmp, not args.no_ds)
        results["trees"] = speed_and_findings(trees, engines, args.rounds, not args.no_ds)
        if args.review:
            last = results["trees"][os.path.relpath(trees[-1], REPO)]
            last["review"] = review(last["_after_findings"], trees[-1], args.review)
            print(f"review of {trees[-1]}: {last['review']}")
        for entry in results["trees"].values():
            del entry["_after_findings"]
        results["memory"] = memory([float(s) for s in args.sizes.split(",") if s], engines, tmp)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
