"""The env_files module run as Ansible runs it on a host (a Python script reading its arguments), on real files.

Contents are random tokens compared by SHA-256 digest; the module's output is searched for them (never shown).
The unprivileged cases run the module as `nobody` (setpriv), where the test runs as root.

Like AnsiballZ on a host, each run executes a copy of the module and of the module_utils it imports (ansible's and
the collection's), made in a temp dir that every account can traverse, with the system's /usr/bin/python3: so the
unprivileged cases pass wherever the repository is cloned (a clone under /root, mode 0700, included), and whatever
interpreter or virtualenv runs the tests.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import COLLECTIONS, digest

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import ARGUMENT_SPECS
from ansible_collections.keywarden.secrets.plugins.modules import env_files

SECRETS = Path("ansible_collections", "keywarden", "secrets", "plugins")
# the interpreter a Debian host runs modules with: outside any checkout or virtualenv, executable by every account
PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def payload_dir() -> Iterator[Path]:
    """What AnsiballZ would unpack on the host: the module, the collection's module_utils and ansible's module_utils
    (with the two files `import ansible` needs), copied into a temp dir that every account can traverse."""
    assert os.path.exists(PYTHON), f"{PYTHON} is missing: the module tests run modules with the host's system Python"
    import ansible  # noqa: PLC0415 - only to find the installed package

    base = Path(tempfile.mkdtemp(prefix="keywarden-env-files-payload-", dir="/tmp"))
    skip = shutil.ignore_patterns("__pycache__")
    installed = Path(ansible.__file__).parent
    for name in ("__init__.py", "release.py"):
        (base / "ansible").mkdir(exist_ok=True)
        shutil.copy(installed / name, base / "ansible" / name)
    for name in ("_vendor", "module_utils"):
        shutil.copytree(installed / name, base / "ansible" / name, ignore=skip)
    shutil.copytree(COLLECTIONS / SECRETS / "module_utils", base / SECRETS / "module_utils", ignore=skip)
    shutil.copytree(COLLECTIONS / SECRETS / "modules", base / SECRETS / "modules", ignore=skip)
    for path in [base, *base.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_module(payload: Path, args: dict[str, Any], check_mode: bool = False, as_user: str | None = None) -> tuple[dict[str, Any], str]:
    """(result, raw output) of one module run; args go through a 0600 file, as AnsiballZ hands them over."""
    arguments = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}
    fd, path = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(arguments, handle)
        prefix: list[str] = []
        if as_user:
            account = pwd.getpwnam(as_user)
            os.chown(path, account.pw_uid, account.pw_gid)
            prefix = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]
        # only the copied payload on the path (-S and a bare environment: nothing of the caller's site), as AnsiballZ runs it
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(payload), "LANG": "C.UTF-8"}
        module = payload / SECRETS / "modules" / "env_files.py"
        proc = subprocess.run([*prefix, PYTHON, "-S", str(module), path], capture_output=True, text=True, timeout=60, check=False, env=env, cwd=payload)
    finally:
        os.unlink(path)
    return json.loads(proc.stdout), proc.stdout + proc.stderr


def env_text() -> str:
    return f"# test\nTOKEN={secrets.token_urlsafe(24)}\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_writes_each_file_0600_and_returns_names_only(payload_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "srv"
    files = {"app.env": env_text(), "worker.env": env_text()}
    result, raw = run_module(payload_dir, {"dir": str(target), "dir_owner": "", "owner": "", "group": "", "files": files})
    assert not result.get("failed"), result.get("msg")
    assert (result["changed"], result["dir_changed"], result["changed_files"]) == (True, True, ["app.env", "worker.env"])
    assert mode(target) == 0o750
    for name, text in files.items():
        assert (mode(target / name), (target / name).stat().st_uid) == (0o600, os.geteuid())
        assert digest((target / name).read_bytes()) == digest(text)
    leaked = any(text in raw for text in files.values())
    assert not leaked
    # the same again: nothing written, inodes kept
    inodes = {name: (target / name).stat().st_ino for name in files}
    again, _ = run_module(payload_dir, {"dir": str(target), "dir_owner": "", "owner": "", "group": "", "files": files})
    assert (again["changed"], again["changed_files"]) == (False, [])
    assert {name: (target / name).stat().st_ino for name in files} == inodes


def test_check_mode_creates_nothing(payload_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "srv"
    result, _ = run_module(payload_dir, {"dir": str(target), "dir_owner": "", "owner": "", "group": "", "files": {"app.env": env_text()}}, check_mode=True)
    assert (result["changed"], result["dir_changed"], result["changed_files"]) == (True, True, ["app.env"])
    assert not target.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param({"files": {"../app.env": "X=1\n"}}, "'../app.env' is not a plain file name", id="path-in-name"),
        pytest.param({"files": {".hidden.env": "X=1\n"}}, "'.hidden.env' is not a plain file name", id="dot-name"),
        pytest.param({"dir_mode": "rwx"}, "dir_mode 'rwx' (keywarden_env_dir_mode) is not an octal mode", id="bad-mode"),
        pytest.param({"owner": "kw-no-such-account"}, "owner (keywarden_env_owner) 'kw-no-such-account' is not a user on this host", id="owner"),
        pytest.param({"dir_owner": "kw-no-such-account"}, "dir_owner (keywarden_env_dir_owner) 'kw-no-such-account' is not a user", id="dir-owner"),
        pytest.param({"dir_group": "kw-no-such-account"}, "dir_group (keywarden_env_group) 'kw-no-such-account' is not a group", id="dir-group"),
    ],
)
def test_refusals_write_nothing(payload_dir: Path, tmp_path: Path, args: dict[str, Any], fragment: str) -> None:
    target = tmp_path / "srv"
    full = {"dir": str(target), "dir_owner": "", "owner": "", "group": "", "files": {"app.env": env_text()}, **args}
    result, _ = run_module(payload_dir, full)
    assert result.get("failed")
    assert fragment in result["msg"]
    assert "\n" not in result["msg"]
    assert not target.exists()


def test_a_file_in_place_of_the_directory_is_refused(payload_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "srv"
    target.write_text("not a directory\n")
    result, _ = run_module(payload_dir, {"dir": str(target), "dir_owner": "", "owner": "", "group": "", "files": {"app.env": env_text()}})
    assert result.get("failed")
    assert f"{target} exists and is not a directory" in result["msg"]


def test_numbers_name_accounts_and_drift_is_fixed(payload_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "srv"
    text = env_text()
    args = {"dir": str(target), "dir_mode": "0700", "dir_owner": str(os.geteuid()), "owner": str(os.geteuid()), "group": str(os.getegid())}
    first, _ = run_module(payload_dir, {**args, "files": {"app.env": text}})
    assert first["changed"] and mode(target) == 0o700
    os.chmod(target / "app.env", 0o640)
    os.chmod(target, 0o500)
    fixed, _ = run_module(payload_dir, {**args, "files": {"app.env": text}})
    assert (fixed["changed"], fixed["dir_changed"], fixed["changed_files"]) == (True, True, ["app.env"])
    assert (mode(target), mode(target / "app.env")) == (0o700, 0o600)
    assert digest((target / "app.env").read_bytes()) == digest(text)


# ---- unprivileged: the module runs as the account the play connects as, without become --------------------------
@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the module as another account")
    try:
        account = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no account 'nobody'")
    base = Path(tempfile.mkdtemp(prefix="keywarden-env-files-", dir="/tmp"))
    os.chown(base, account.pw_uid, account.pw_gid)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_unprivileged_empty_owners_mean_the_running_account(payload_dir: Path, nobody_dir: Path) -> None:
    account = pwd.getpwnam("nobody")
    target = nobody_dir / "srv"
    text = env_text()
    result, _ = run_module(payload_dir, {"dir": str(target), "dir_owner": "", "owner": "", "group": "", "files": {"app.env": text}}, as_user="nobody")
    assert not result.get("failed"), result.get("msg")
    for path in (target, target / "app.env"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (account.pw_uid, account.pw_gid)
    assert digest((target / "app.env").read_bytes()) == digest(text)


def test_unprivileged_root_owned_directory_is_refused_with_a_hint(payload_dir: Path, nobody_dir: Path) -> None:
    target = nobody_dir / "srv"
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    result, _ = run_module(payload_dir, {"dir": str(target), "owner": "", "group": group, "files": {"app.env": env_text()}}, as_user="nobody")
    assert result.get("failed")
    assert f"{target} cannot be given to 0:" in result["msg"]
    assert "use become, or leave keywarden_env_dir_owner, keywarden_env_owner and keywarden_env_group empty" in result["msg"]
    assert not target.exists()


def test_unprivileged_files_for_another_account_are_refused_before_any_change(payload_dir: Path, nobody_dir: Path) -> None:
    target = nobody_dir / "srv"
    result, _ = run_module(payload_dir, {"dir": str(target), "dir_owner": "", "owner": "root", "group": "", "files": {"app.env": env_text()}}, as_user="nobody")
    assert result.get("failed")
    assert f"the files in {target} cannot be given to 0:" in result["msg"]
    assert not target.exists()


# ---- bundles: files delivered together (certificates), a directory swapped in by one rename of a link ---------------
def bundle_files() -> dict[str, str]:
    return {"certificate.pem": env_text(), "chain.pem": env_text(), "private_key.pem": env_text()}


def bundle_args(target: Path, bundles: dict[str, dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {"dir": str(target), "dir_owner": "", "owner": "", "group": "", "files": {"app.env": "# paths\n"}, "bundles": bundles, **extra}


def versions(target: Path, name: str) -> list[str]:
    return sorted(p.name for p in target.iterdir() if p.name.startswith(f".{name}@"))


def test_a_bundle_is_a_directory_behind_a_link(payload_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "srv"
    files = bundle_files()
    result, raw = run_module(payload_dir, bundle_args(target, {"app.web_tls": files}))
    assert not result.get("failed"), result.get("msg")
    assert (result["changed_files"], result["previous"]) == (["app.env", "app.web_tls"], {"app.web_tls": None})
    link = target / "app.web_tls"
    assert link.is_symlink() and versions(target, "app.web_tls") == [os.readlink(link)]
    assert mode(link.resolve()) == 0o700
    for name, text in files.items():
        assert (mode(link / name), digest((link / name).read_bytes())) == (0o600, digest(text))
    assert not any(text in raw for text in files.values())
    # unchanged: nothing written, the same directory
    again, _ = run_module(payload_dir, bundle_args(target, {"app.web_tls": files}))
    assert (again["changed"], again["changed_files"], os.readlink(link)) == (False, [], versions(target, "app.web_tls")[0])


def test_a_changed_bundle_swaps_the_link_and_keeps_the_previous_directory(payload_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "srv"
    run_module(payload_dir, bundle_args(target, {"app.web_tls": bundle_files(), "app.web_tls.x": bundle_files()}))
    first = os.readlink(target / "app.web_tls")
    # a crashed write's leftovers: a directory and a temp link of this bundle
    (target / ".app.web_tls@crashed").mkdir()
    (target / ".app.web_tls@link-crashed").symlink_to(first)
    other = versions(target, "app.web_tls.x")
    second_files = bundle_files()
    result, _ = run_module(payload_dir, bundle_args(target, {"app.web_tls": second_files, "app.web_tls.x": dict(zip(bundle_files(), other, strict=False))}))
    assert result["changed_files"] == ["app.web_tls", "app.web_tls.x"] and result["previous"]["app.web_tls"] == first
    second = os.readlink(target / "app.web_tls")
    assert second != first and versions(target, "app.web_tls") == sorted([first, second])
    assert digest((target / "app.web_tls" / "private_key.pem").read_bytes()) == digest(second_files["private_key.pem"])
    # a third: the first goes; another bundle whose name starts alike is never touched by this one's clean-up
    third, _ = run_module(payload_dir, bundle_args(target, {"app.web_tls": bundle_files()}))
    assert third["previous"] == {"app.web_tls": second} and first not in versions(target, "app.web_tls")
    assert len(versions(target, "app.web_tls")) == 2 and len(versions(target, "app.web_tls.x")) == 2


def test_drift_in_a_bundle_is_rewritten(payload_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "srv"
    files = bundle_files()
    run_module(payload_dir, bundle_args(target, {"app.web_tls": files}))
    os.chmod(target / "app.web_tls" / "private_key.pem", 0o644)
    fixed, _ = run_module(payload_dir, bundle_args(target, {"app.web_tls": files}))
    assert fixed["changed_files"] == ["app.web_tls"] and mode(target / "app.web_tls" / "private_key.pem") == 0o600


def test_check_mode_writes_no_bundle(payload_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "srv"
    target.mkdir()
    result, _ = run_module(payload_dir, bundle_args(target, {"app.web_tls": bundle_files()}), check_mode=True)
    assert result["changed_files"] == ["app.env", "app.web_tls"]
    assert list(target.iterdir()) == []


@pytest.mark.parametrize(
    ("bundles", "fragment"),
    [
        pytest.param({"../x": {"a.pem": env_text()}}, "bundles: '../x' is not a plain name", id="path"),
        pytest.param({"a@b": {"a.pem": env_text()}}, "bundles: 'a@b' is not a plain name", id="at-sign"),
        pytest.param({"app.env": {"a.pem": env_text()}}, "bundles: 'app.env' is not a plain name", id="a-file-name"),
        pytest.param({"app.web_tls": {"../a.pem": env_text()}}, "bundles: 'app.web_tls/../a.pem' is not a plain file name", id="file-path"),
        pytest.param({"app.web_tls": {}}, "bundles: 'app.web_tls' must map file names to contents", id="empty"),
    ],
)
def test_bundle_refusals_write_nothing(payload_dir: Path, tmp_path: Path, bundles: dict[str, Any], fragment: str) -> None:
    target = tmp_path / "srv"
    result, _ = run_module(payload_dir, bundle_args(target, bundles))
    assert result.get("failed") and fragment in result["msg"] and "\n" not in result["msg"]
    assert not target.exists()


def test_something_else_at_a_bundles_name_is_refused_before_any_change(payload_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "srv"
    (target / "app.web_tls").mkdir(parents=True)
    result, _ = run_module(payload_dir, bundle_args(target, {"app.web_tls": bundle_files()}))
    assert result.get("failed") and f"{target / 'app.web_tls'} exists and is not a symbolic link" in result["msg"]
    assert sorted(p.name for p in target.iterdir()) == ["app.web_tls"]


def test_module_documentation_matches_the_argument_spec() -> None:
    doc = yaml.safe_load(env_files.DOCUMENTATION)["options"]
    spec = {**ARGUMENT_SPECS["env_files"], "files": {"type": "dict", "default": {}}, "bundles": {"type": "dict", "default": {}}}
    assert set(doc) == set(spec)
    for name, option in spec.items():
        assert doc[name]["type"] == option["type"], name
        assert doc[name].get("default") == option.get("default"), name
