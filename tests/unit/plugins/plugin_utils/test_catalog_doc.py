"""docs/security/secrets/catalog.md (the catalog schema reference) agrees with the schema tables validation uses
(issue 10 item 14): scripts/secrets/catalog-doc --check fails on any drift, and the doc the catalog cites exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ansible_collections.keywarden.secrets.plugins.plugin_utils import catalog as schema

REPO = Path(__file__).resolve().parents[4]
TOOL = REPO / "scripts" / "secrets" / "catalog-doc"
DOC = REPO / "docs" / "security" / "secrets" / "catalog.md"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, check=False)


def test_the_catalog_cites_a_schema_doc_that_exists() -> None:
    header = (REPO / "config" / "secrets" / "catalog.yml").read_text().split("keywarden_catalog_version")[0]
    assert "docs/security/secrets/catalog.md" in header
    assert DOC.is_file()


def test_the_doc_matches_the_code_tables() -> None:
    out = run("--check")
    assert out.returncode == 0, out.stderr
    text = DOC.read_text()
    for name in [*schema.SECRET_FIELDS, *schema.POLICY_FIELDS, *schema.CONSUMER_FIELDS]:
        assert f"| `{name}` |" in text
    for kind, fields in schema.KIND_TARGET_SCHEMA.items():
        for field in fields:
            assert f"| `{kind}` | `{field}` |" in text


def test_a_doc_that_drifted_from_the_code_fails_the_check(tmp_path: Path) -> None:
    drifted = tmp_path / "catalog.md"
    drifted.write_text(DOC.read_text().replace("| `postgresql` | `database` | yes |", "| `postgresql` | `database` | no |"))
    out = run("--check", "--doc", str(drifted))
    assert out.returncode == 1
    assert "out of date" in out.stderr
    assert run("--doc", str(drifted)).returncode == 0  # regenerates the block
    assert drifted.read_text() == DOC.read_text()
