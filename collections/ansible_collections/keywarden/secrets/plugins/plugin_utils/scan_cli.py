# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scan-secrets command line (scripts/audit/scan-secrets, and the console script keywarden-scan-secrets that
the pre-commit hook installs). Stdlib only, like the scanner engine (module_utils/scanner.py) it drives."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from ansible_collections.keywarden.secrets.plugins.module_utils import scanner


def _git_files(paths: list[str]) -> list[str]:
    """Files git would commit under each path: tracked plus untracked-not-ignored (never .gitignore'd state)."""
    files: list[str] = []
    for top in paths:
        if os.path.isfile(top):
            files.append(top)
            continue
        out = subprocess.run(
            ["git", "-C", top, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], check=True, capture_output=True
        ).stdout  # fmt: skip
        for name in out.decode("utf-8", "surrogateescape").split("\0"):
            path = os.path.join(top, name) if name else ""
            if path and os.path.isfile(path) and not os.path.islink(path):
                files.append(os.path.normpath(path))
    return files


def _git_history(repo: str, result: scanner.ScanResult) -> None:
    """Scan every line ever added on any branch (git log -p --all), reported as <commit>:<path>."""
    proc = subprocess.Popen(
        ["git", "-C", repo, "log", "-p", "--all", "--no-color", "--no-ext-diff", "--unified=0", "--format=commit %H"], stdout=subprocess.PIPE
    )  # fmt: skip
    if proc.stdout is None:  # stdout=PIPE always gives one
        raise RuntimeError("git log gave no output stream")
    commit = path = ""
    added: list[str] = []
    line_map: list[int] = []
    new_line = 0

    def flush() -> None:
        if path and added:
            text = "\n".join(added) + "\n"
            for finding in scanner.scan_text(text, f"{commit[:12]}:{path}", scanner.file_kind(path), 1, rel=path):
                finding.line = line_map[finding.line - 1]
                result.add([finding])
            result.bytes_scanned += len(text)
        added.clear()
        line_map.clear()

    for raw in proc.stdout:
        line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
        if line.startswith("commit ") and len(line) == 47:
            flush()
            commit, path = line[7:], ""
        elif line.startswith("+++ "):
            flush()
            path = line[6:] if line.startswith("+++ b/") else ""
            if path:
                result.files_scanned += 1
        elif line.startswith("@@ "):
            new = line.split(" ")[2]
            new_line = int(new.lstrip("+").split(",")[0])
        elif line.startswith("+") and path:
            added.append(line[1:])
            line_map.append(new_line)
            new_line += 1
    flush()
    if proc.wait() != 0:
        raise RuntimeError(f"git log failed in {repo}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scan-secrets", description="Find hardcoded credentials in files, trees and git history. Exit 0: clean, 1: findings, 2: error."
    )
    parser.add_argument("paths", nargs="*", default=["."], metavar="PATH")
    parser.add_argument("--format", choices=("human", "json", "sarif"), default="human")
    parser.add_argument("--baseline", metavar="FILE", help="accept the findings whose fingerprints this file lists")
    parser.add_argument("--update-baseline", metavar="FILE", help="write every current finding to FILE as accepted, exit 0")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip paths or names matching GLOB (repeatable)")
    parser.add_argument("--git-files", action="store_true", help="scan only what git would commit (tracked + untracked, not ignored)")
    parser.add_argument("--git-history", action="store_true", help="also scan every line ever added in the git history of each PATH")
    parser.add_argument("--follow-symlinks", action="store_true", help="follow symlinks (loops are detected)")
    parser.add_argument("--max-file-size", type=int, default=scanner.DEFAULT_MAX_FILE_SIZE, metavar="BYTES")
    parser.add_argument("--output", metavar="FILE", help="write the report to FILE instead of stdout")
    parser.add_argument(
        "--explain", action="store_true", help="say under each finding which rule matched and why the value read as no placeholder or reference"
    )
    args = parser.parse_args(argv)

    try:
        for path in args.paths:
            if not os.path.lexists(path):
                raise FileNotFoundError(f"{path}: no such file or directory")
        accepted = scanner.load_baseline(args.baseline) if args.baseline else set()
        files = _git_files(args.paths) if args.git_files else None
        if files is not None and args.exclude:
            files = [f for f in files if not any(scanner.fnmatch.fnmatch(f, g) or scanner.fnmatch.fnmatch(os.path.basename(f), g) for g in args.exclude)]
        result = scanner.scan_paths(args.paths, args.exclude, args.follow_symlinks, args.max_file_size, relative_to=os.getcwd(), files=files)
        if args.git_history:
            for path in args.paths:
                _git_history(path, result)
    except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"scan-secrets: error: {exc}", file=sys.stderr)
        return 2

    for warning in result.warnings:
        print(f"scan-secrets: warning: {warning}", file=sys.stderr)
    if args.update_baseline:
        with open(args.update_baseline, "w", encoding="utf-8") as handle:
            json.dump(scanner.baseline_document(result.findings), handle, indent=2, sort_keys=True)
            handle.write("\n")
        print(f"scan-secrets: {len(result.findings)} findings accepted in {args.update_baseline}", file=sys.stderr)
        return 0
    findings = [f for f in result.findings if f.fingerprint not in accepted]
    findings.sort(key=lambda f: (f.path, f.line, f.column))

    if args.format == "json":
        report = json.dumps([f.as_dict() for f in findings], indent=2) + "\n"
    elif args.format == "sarif":
        report = json.dumps(scanner.sarif(findings), indent=2) + "\n"
    else:
        report = "".join(f"{f.path}:{f.line}: {f.rule} ({f.severity}): {f.excerpt}\n" + (f"    why: {f.explain}\n" if args.explain else "") for f in findings)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(report)
    else:
        sys.stdout.write(report)
    files_hit = len({f.path for f in findings})
    print(
        f"scan-secrets: {len(findings)} findings in {files_hit} files; {result.files_scanned} files scanned, "
        f"{result.files_skipped} skipped, {len(result.findings) - len(findings)} accepted by baseline, {len(result.warnings)} warnings",
        file=sys.stderr,
    )
    return 1 if findings else 0
