"""`make test`'s last word (scripts/dev/test-summary) on crafted results, and one real pytest run of a tiny fake
suite through scripts/dev/pytest-suite, as scripts/dev/test-all runs the real one.

A green summary needs every suite's report, a runner that exited 0 or 1, and at least the floor's number of tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SUMMARY = REPO / "scripts" / "dev" / "test-summary"
SUITE = REPO / "scripts" / "dev" / "pytest-suite"
FLOORS = REPO / "tests" / "minimum-counts.txt"


def junit(path: Path, tests: int, failures: int = 0, errors: int = 0, skipped: int = 0) -> None:
    cases = "".join(f'<testcase classname="t" name="c{i}"/>' for i in range(tests))
    path.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}">'
        f"{cases}</testsuite></testsuites>"
    )


def summary(results: Path, floors: str = "pytest 3\nmolecule-default 2\n") -> tuple[int, str]:
    (results.parent / "floors.txt").write_text("# suite minimum\n" + floors)
    out = subprocess.run([sys.executable, str(SUMMARY), str(results), str(results.parent / "floors.txt")], capture_output=True, text=True, check=False)
    return out.returncode, out.stdout + out.stderr


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A green run: two lint checks, pytest (3 tests, exit 0), molecule-default (2 tests)."""
    path = tmp_path / "results"
    path.mkdir()
    (path / "checks").write_text("yamllint pass\nruff-lint pass\nmolecule-default pass\n")
    junit(path / "pytest.xml", 3)
    (path / "pytest.rc").write_text("0\n")
    junit(path / "molecule-default.xml", 2)
    return path


def test_a_complete_green_run_passes(results: Path) -> None:
    rc, out = summary(results)
    assert rc == 0, out
    assert out.splitlines()[-1] == "8 passed, 0 failed"
    assert (results / "summary").read_text() == "8 passed, 0 failed\n"


@pytest.mark.parametrize(("rc", "meaning"), [(2, "interrupted"), (3, "internal error"), (4, "usage error"), (5, "no tests collected")])
def test_a_runner_that_ran_no_tests_fails(results: Path, rc: int, meaning: str) -> None:
    junit(results / "pytest.xml", 0)  # what pytest writes after a usage error or when it collected nothing
    (results / "pytest.rc").write_text(f"{rc}\n")
    code, out = summary(results)
    assert code == 1, out
    assert f"pytest: FAILED: its runner exited {rc} ({meaning})" in out
    assert "pytest: FAILED: 0 tests, fewer than the 3 of" in out
    assert out.splitlines()[-1].endswith("failed") and not out.splitlines()[-1].endswith(" 0 failed")


def test_an_exit_status_is_checked_even_when_the_report_looks_complete(results: Path) -> None:
    (results / "pytest.rc").write_text("4\n")
    code, out = summary(results)
    assert code == 1, out
    assert "its runner exited 4 (usage error)" in out


def test_a_failed_runner_needs_a_failure_on_its_report(results: Path) -> None:
    (results / "pytest.rc").write_text("1\n")
    code, out = summary(results)
    assert code == 1, out
    assert "its runner exited 1 but its report holds no failure" in out


def test_fewer_tests_than_the_floor_fail(results: Path) -> None:
    junit(results / "pytest.xml", 2)
    code, out = summary(results)
    assert code == 1, out
    assert "pytest: FAILED: 2 tests, fewer than the 3 of" in out
    assert "tests vanished" in out


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_a_molecule_scenario_without_tests_fails(results: Path, case: str) -> None:
    # molecule logs "Skipping, no tests found." and exits 0: its check passes, its report is missing or empty
    if case == "missing":
        (results / "molecule-default.xml").unlink()
    else:
        junit(results / "molecule-default.xml", 0)
    code, out = summary(results)
    assert code == 1, out
    assert ("molecule-default: FAILED: it wrote no report molecule-default.xml" if case == "missing" else "molecule-default: FAILED: 0 tests") in out


def test_a_suite_without_a_floor_still_needs_one_test(results: Path) -> None:
    junit(results / "molecule-rotation.xml", 0)
    code, out = summary(results)
    assert code == 1, out
    assert "molecule-rotation: FAILED: 0 tests, fewer than the 1 of every suite's floor" in out


def test_skips_and_failed_checks_count_as_failures(results: Path) -> None:
    junit(results / "pytest.xml", 3, skipped=1)
    (results / "checks").write_text("yamllint fail\n")
    code, out = summary(results)
    assert code == 1, out
    assert out.splitlines()[-1] == "4 passed, 2 failed"


def test_the_repository_floors_name_every_suite_of_make_test() -> None:
    suites = {line.split()[0] for line in FLOORS.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert suites == {"pytest", "molecule-default", "molecule-rotation"}
    assert all(int(line.split()[1]) > 0 for line in FLOORS.read_text().splitlines() if line.strip() and not line.startswith("#"))


def test_a_collection_error_does_not_hide_the_other_tests(tmp_path: Path) -> None:
    """A real run of a fake suite: one module that no longer imports, one with three tests."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_good.py").write_text("def test_a():\n    pass\n\n\ndef test_b():\n    pass\n\n\ndef test_c():\n    pass\n")
    (suite / "test_broken.py").write_text("import a_module_that_is_gone\n\n\ndef test_d():\n    pass\n\n\ndef test_e():\n    pass\n")
    results = tmp_path / "results"
    results.mkdir()
    run = subprocess.run(["bash", str(SUITE), str(results), "pytest", str(suite)], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert (results / "pytest.rc").read_text().strip() == "1"
    tests, bad = (int(x) for x in _counts(results / "pytest.xml"))
    assert (tests, bad) == (4, 1)  # the three good tests ran; the broken module is one error
    code, out = summary(results, "pytest 5\n")
    assert code == 1, out
    assert "pytest: 3 passed, 1 failed, 0 skipped (floor 5)" in out
    assert "pytest: FAILED: 4 tests, fewer than the 5 of" in out


def _counts(path: Path) -> tuple[int, int]:
    import xml.etree.ElementTree as ET  # noqa: PLC0415, S405 - our own pytest's report

    suite = ET.parse(path).getroot().find("testsuite")  # noqa: S314
    assert suite is not None
    return int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
