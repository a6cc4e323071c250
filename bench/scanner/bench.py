#!/usr/bin/env python3
"""Scanner throughput and memory: keywarden's engine against detect-secrets on the same tree, in the same run.

The tree is this repository's own text files (real code and config) plus the labelled corpus (dense in
credentials), copied N times. Each tool runs in a fresh child process, on one core, so the peak RSS it
reports (ru_maxrss) is its own. Usage:  bench/scanner/bench.py [--sizes 4,16,64] [--ds-size 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "collections")]

from scanner_corpus.generate import build  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
sys.path[:0] = [sys.argv[3], sys.argv[4]]
tool, root = sys.argv[1], sys.argv[2]
files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
size = sum(os.path.getsize(f) for f in files)
start = time.perf_counter()
if tool == "keywarden":
    from ansible_collections.keywarden.secrets.plugins.module_utils.scanner import scan_paths
    # findings are counted as they come (on_finding), as the CLI's streaming formats could: memory is the engine's own
    count = scan_paths([root], on_finding=lambda f: None).finding_count
else:
    from scanner_corpus.detect_secrets_run import detect_secrets_findings
    count = len(detect_secrets_findings(files, root))
elapsed = time.perf_counter() - start
print(json.dumps({"tool": tool, "bytes": size, "files": len(files), "seconds": elapsed, "findings": count,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _repo_text_files() -> list[Path]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], check=True, capture_output=True).stdout.decode().split("\0")
    files = []
    for name in out:
        path = REPO / name
        if name and path.is_file() and not path.is_symlink() and path.stat().st_size < 1_000_000:
            head = path.read_bytes()[:4096]
            if b"\0" not in head:
                files.append(path)
    return files


def build_tree(root: Path, megabytes: float, seed: int = 7) -> int:
    seed_dir = root / "_seed"
    build(seed_dir / "corpus", seed, files_per_format=4)
    for path in _repo_text_files():
        dest = seed_dir / "repo" / path.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    unit = sum(f.stat().st_size for f in seed_dir.rglob("*") if f.is_file())
    copies = max(1, round(megabytes * 1024 * 1024 / unit))
    for i in range(copies):
        shutil.copytree(seed_dir, root / f"copy{i:04d}")
    shutil.rmtree(seed_dir)
    return copies * unit


def run(tool: str, root: Path) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", CHILD, tool, str(root), str(REPO / "tests"), str(REPO / "collections")],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    result["mb_per_s"] = result["bytes"] / 1024 / 1024 / result["seconds"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="4,16,64", help="tree sizes in MiB for keywarden (memory must stay flat)")
    parser.add_argument("--ds-size", type=float, default=4, help="tree size in MiB on which both tools run")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    results: dict[str, object] = {"python": sys.version.split()[0], "cpu": os.cpu_count(), "when": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="kw-bench-") as tmp:
        same = Path(tmp) / "same"
        build_tree(same, args.ds_size)
        kw = run("keywarden", same)
        ds = run("detect-secrets", same)
        results["same_tree"] = {"keywarden": kw, "detect_secrets": ds, "speedup": kw["mb_per_s"] / ds["mb_per_s"]}
        print(f"same tree {kw['bytes'] / 2**20:.1f} MiB, {kw['files']} files: keywarden {kw['mb_per_s']:.2f} MB/s, "
              f"detect-secrets {ds['mb_per_s']:.2f} MB/s: {kw['mb_per_s'] / ds['mb_per_s']:.1f}x")  # fmt: skip
        shutil.rmtree(same)
        scaling = []
        for size in (float(s) for s in args.sizes.split(",")):
            tree = Path(tmp) / f"t{size:g}"
            build_tree(tree, size)
            r = run("keywarden", tree)
            scaling.append(r)
            print(f"keywarden {r['bytes'] / 2**20:7.1f} MiB {r['files']:6d} files: {r['mb_per_s']:6.2f} MB/s, peak RSS {r['maxrss_kib'] / 1024:.1f} MiB")
            shutil.rmtree(tree)
        results["scaling"] = scaling
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
