"""detect-secrets (Yelp) on the same files, for the side-by-side comparison: default plugins and filters, one process."""

from __future__ import annotations

import os
from collections.abc import Iterable

from detect_secrets import SecretsCollection
from detect_secrets.settings import default_settings


def detect_secrets_findings(files: Iterable[str], root: str) -> set[tuple[str, int]]:
    """(path relative to ``root``, line) of every secret detect-secrets reports."""
    collection = SecretsCollection(root=root)
    with default_settings():
        collection.scan_files(*(os.path.relpath(f, root) for f in files), num_processors=1)
    found: set[tuple[str, int]] = set()
    for filename, secret in collection:
        found.add((os.path.relpath(os.path.join(root, filename), root), int(secret.line_number)))
    return found
