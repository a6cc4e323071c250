"""detect-secrets (Yelp) on the same files, for the side-by-side comparison: default plugins and filters, one process.

`SecretsCollection.scan_files` always forks a multiprocessing pool, even for one processor; forked from the
pytest process (which has threads by then) its worker can hang for ever on a lock held at fork time (seen in
CI). `scan_file` per file does the same scan in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from detect_secrets import SecretsCollection
from detect_secrets.settings import default_settings


def detect_secrets_findings(files: Iterable[str], root: str) -> set[tuple[str, int]]:
    """(path relative to ``root``, line) of every secret detect-secrets reports."""
    collection = SecretsCollection(root=root)
    with default_settings():
        for path in files:
            collection.scan_file(os.path.relpath(path, root))
    found: set[tuple[str, int]] = set()
    for filename, secret in collection:
        found.add((os.path.relpath(os.path.join(root, filename), root), int(secret.line_number)))
    return found
