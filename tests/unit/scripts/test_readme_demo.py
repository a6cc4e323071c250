"""README.md's `make demo` sample is scripts/demo/run's real output (scripts/demo/update-readme): the same steps in
the same order, nothing cut off, and an honest account of what a second run does."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
README = (REPO / "README.md").read_text()
RUN = (REPO / "scripts" / "demo" / "run").read_text()


def block(name: str) -> str:
    match = re.search(rf"<!-- demo: {name} .*?-->\n```\n(.*?)```\n", README, re.DOTALL)
    assert match, f"README.md has no '{name}' demo block"
    return match.group(1)


def test_the_sample_shows_every_step_of_the_demo_in_order() -> None:
    steps = re.findall(r'^step "(\d+/\d+ [^"]*)"', RUN, re.MULTILINE)
    shown = re.findall(r"^== (\d+/\d+ .*)$", block("first run"), re.MULTILINE)
    assert len(steps) == 6
    assert shown == steps


def test_the_sample_ends_each_step_whole() -> None:
    first = block("first run")
    # the lines the old grep cut off: the site run's recap, the rotation report's last column, the variable names
    assert re.search(r"^localhost +: ok=\d+ +changed=\d+ +unreachable=0 +failed=0", first, re.MULTILINE)
    assert re.search(r"^  app_db +alternating_users +v1->v2 .* rotated", first, re.MULTILINE)
    assert "logged in to 127.0.0.1:" in first and " as app_a " in first and " as app_b " in first
    assert "  app.env: DB_NAME DB_PASSWORD DB_USER PAYMENTS_API_KEY REDIS_PASSWORD" in first
    assert "demo done." in first


def test_the_readme_says_what_a_second_run_does() -> None:
    second = block("second run")
    assert re.search(r"^localhost +: ok=\d+ +changed=0 ", second, re.MULTILINE)
    assert re.search(r"^  app_db +alternating_users +v2->v3 ", second, re.MULTILINE)
    assert "nothing changes" not in README
    assert "rotates `app_db` once more" in README
