"""The quoting matrix: every value keywarden writes into a .env file reads back byte for byte in every real consumer
of the file's format, for values covering every printable ASCII character (generated here, at test time).

Consumers, each the real parser:
- docker compose env_file: Debian's docker-compose 1.29 (reads with python-dotenv 0.21) and docker compose v2
  (scripts/dev/compose-v2), each starting a real container of localhost/keywarden-app:bookworm that prints its
  environment as hashes;
- python-dotenv (`dotenv_values`): the pinned one of requirements.txt, and Debian 12's 0.21;
- systemd's EnvironmentFile=: a unit in a systemd container (as molecule runs them) prints its environment as hashes;
- bash: `set -a; . FILE`.

Values a format cannot carry are refused (quote_env_value returns None; render_env_file raises, naming file, variable
and secret): the refusals must follow the documented rule exactly. Only hashes and variable names are compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import string
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dotenv import dotenv_values

from ansible_collections.keywarden.secrets.plugins.plugin_utils.deploy import FORMATS, quote_env_value, render_env_file
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/keywarden-app:bookworm"
PREFIX = "KW_Q"
SPECIALS = "".join(c for c in string.printable if c not in string.ascii_letters + string.digits + string.whitespace) + " "
# prints {name: sha256(value)} of the variables named KW_Q*, as JSON, to stdout or to the file named by argv[1]
DIGEST = textwrap.dedent(
    f"""
    import hashlib, json, os, sys
    out = {{k: hashlib.sha256(os.fsencode(v)).hexdigest() for k, v in os.environ.items() if k.startswith("{PREFIX}")}}
    text = json.dumps(out, sort_keys=True)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)
    else:
        print(text)
    """
)
# consumer (deploy.FORMATS) -> the real parsers that stand for it here
READERS = {"compose": ("compose-v1", "compose-v2"), "dotenv": ("dotenv", "dotenv-0.21"), "systemd": ("systemd",), "shell": ("bash",)}


def matrix() -> list[str]:
    """Every printable ASCII character alone, inside, leading, trailing and doubled; every pair of the non-alphanumeric
    ones (space included); known traps; random strings over all of printable ASCII; a few non-ASCII letters."""
    printable = [chr(code) for code in range(0x20, 0x7F)]
    values = {"", "".join(printable)}
    for char in printable:
        values |= {char, f"x{char}y", f"{char}start", f"end{char}", char * 2, f" {char} "}
    values |= {a + b for a in SPECIALS for b in SPECIALS}
    values |= {"${HOME}", "$HOME", "${X:-d}", "$$", "a\\", "a\\\\b", "\\'", "'\\''", "it's", 'say "hi"', "a # b", "a #b", "#a", " lead", "trail "}
    values |= {"".join(secrets.choice(printable) for _ in range(24)) for _ in range(64)}
    values |= {"é", "naïve café", "€ 100", "日本語"}
    return sorted(values)


VALUES = matrix()


def documented_refusal(value: str, env_format: str) -> bool:
    """What docs/security/secrets/delivery.md (and the refusal message) says each format cannot carry."""
    if env_format in ("systemd", "shell"):
        return False
    if "${" in value or value.endswith("\\"):
        return True
    quote_or_pair = "'" in value or "\\\\" in value
    if env_format == "portable":
        return ("$" in value or "`" in value) and quote_or_pair
    if env_format == "compose":
        return "$" in value and "\\" in value and quote_or_pair
    return False


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Rendered:
    """One .env file per format holding every matrix value the format carries, as render_env_file writes it."""

    def __init__(self, root: Path, env_format: str) -> None:
        self.format = env_format
        self.accepted = {f"{PREFIX}{index:04d}": value for index, value in enumerate(VALUES) if quote_env_value(value, env_format) is not None}
        service = {"service": f"quoting-{env_format}", "vars": [{"name": name, "secret": "matrix", "field": name} for name in self.accepted]}
        self.path = root / f"{env_format}.env"
        self.path.write_text(render_env_file(service, {("matrix", name): value for name, value in self.accepted.items()}, "test", env_format=env_format))
        self.path.chmod(0o644)  # read by container users too; nothing secret here
        self.expected = {name: sha(value) for name, value in self.accepted.items()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    root = tmp_path_factory.mktemp("quoting")
    os.chmod(root, 0o755)  # noqa: S103 - docker cp and the container users read the matrix files; nothing secret
    return {env_format: Rendered(root, env_format) for env_format in FORMATS}


# ---- the rules -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_format", list(FORMATS))
def test_every_printable_character_is_carried_alone_and_in_context(env_format: str) -> None:
    # a trailing backslash excepted where python-dotenv < 1.0 reads the file (documented, and refused)
    trailing = env_format in ("portable", "compose", "dotenv")
    refused = [
        f"U+{ord(char):04X} in {form!r}"
        for char in (chr(code) for code in range(0x20, 0x7F))
        for form in ("{c}", "x{c}y", "{c}start", "end{c}", "{c}{c}", " {c} ")
        if quote_env_value(form.format(c=char), env_format) is None and not (trailing and form.format(c=char).endswith("\\"))
    ]
    assert refused == []


@pytest.mark.parametrize("env_format", list(FORMATS))
def test_refusals_follow_the_documented_rule(env_format: str) -> None:
    disagree = [index for index, value in enumerate(VALUES) if (quote_env_value(value, env_format) is None) != documented_refusal(value, env_format)]
    assert disagree == []


@pytest.mark.parametrize("env_format", list(FORMATS))
def test_control_characters_are_never_carried(env_format: str) -> None:
    for char in [chr(code) for code in range(0x20)] + ["\x7f", "\x85"]:
        assert quote_env_value(f"a{char}b", env_format) is None, f"U+{ord(char):04X}"


def test_generated_values_stay_unquoted() -> None:
    # what the generator makes (alnum, hex, urlsafe) is written as before: no file changes, no restart on upgrade
    for env_format in FORMATS:
        value = string.ascii_letters + string.digits + "-_"
        assert quote_env_value(value, env_format) == value


def test_a_refused_value_names_file_variable_and_secret_never_the_value() -> None:
    value = "p$w'" + secrets.token_hex(8)
    service = {"service": "app", "vars": [{"name": "API_KEY", "secret": "payments_api_key", "field": "value"}]}
    with pytest.raises(StoreError) as raised:
        render_env_file(service, {("payments_api_key", "value"): value}, "local")
    message = str(raised.value)
    assert message.startswith("app.env API_KEY: secret 'payments_api_key' field 'value' holds what the portable .env format")
    assert "keywarden_env_formats for service 'app'" in message
    assert message.endswith("no .env file was written")
    assert "\n" not in message
    assert value not in message and value[4:] not in message
    # the same value in the one format of the consumer that reads the file
    assert "API_KEY=" in render_env_file(service, {("payments_api_key", "value"): value}, "local", env_format="systemd")


def test_the_matrix_is_not_trivial(rendered: dict[str, Rendered]) -> None:
    assert len(VALUES) > 1300
    for env_format, file in rendered.items():
        assert len(file.accepted) > 0.85 * len(VALUES), env_format
    assert len(rendered["systemd"].accepted) == len(rendered["shell"].accepted) == len(VALUES)


# ---- the real parsers ----------------------------------------------------------------------------------------------
def read_bash(path: Path) -> dict[str, str]:
    script = 'set -a; . "$1"; exec "$2" -c "$3"'
    out = subprocess.run(
        ["bash", "-c", script, "bash", str(path), sys.executable, DIGEST], capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def read_dotenv(path: Path) -> dict[str, str]:
    return {name: sha(value or "") for name, value in dotenv_values(path).items() if name.startswith(PREFIX) and value is not None}


def read_debian_dotenv(path: Path) -> dict[str, str]:
    """Debian 12's python3-dotenv (0.21, the one docker-compose 1.29 uses), in the system Python."""
    script = (
        "import hashlib, json, sys\nfrom dotenv import dotenv_values\n"
        "print(json.dumps({k: hashlib.sha256(v.encode()).hexdigest() for k, v in dotenv_values(sys.argv[1]).items() if v is not None}))\n"
    )
    out = subprocess.run(["/usr/bin/python3", "-c", script, str(path)], capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return {name: value for name, value in json.loads(out.stdout).items() if name.startswith(PREFIX)}


def compose_reader(command: list[str], tag: str, tmp: Path) -> Callable[[Path], dict[str, str]]:
    def read(path: Path) -> dict[str, str]:
        project = tmp / f"kwhdq{tag}{os.getpid()}"
        project.mkdir(exist_ok=True)
        (project / "docker-compose.yml").write_text(
            f"---\nservices:\n  probe:\n    image: {IMAGE}\n    env_file: [{json.dumps(str(path))}]\n    command: [python3, -c, {json.dumps(DIGEST)}]\n"
        )
        out = subprocess.run(
            [*command, "-f", str(project / "docker-compose.yml"), "-p", project.name, "run", "--rm", "-T", "probe"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            cwd=project,
        )
        subprocess.run(
            [*command, "-f", str(project / "docker-compose.yml"), "-p", project.name, "down"], capture_output=True, check=False, timeout=120, cwd=project
        )
        assert out.returncode == 0, f"{' '.join(command)} run: {out.stderr[-2000:]}"
        return json.loads(out.stdout.strip().splitlines()[-1])

    return read


@pytest.fixture(scope="module")
def systemd_reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], dict[str, str]]]:
    """A systemd container (as molecule runs them); each file is read by a oneshot unit with EnvironmentFile=."""
    name = f"kwhd-quoting-systemd-{os.getpid()}"
    started = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"]
        + ["--cgroupns", "host", IMAGE, "/lib/systemd/systemd"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert started.returncode == 0, started.stderr

    def exec_(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "exec", name, *argv], capture_output=True, text=True, check=False, timeout=120)

    try:
        for _ in range(60):  # the bus appears a moment after PID 1 starts
            state = exec_("systemctl", "is-system-running", "--wait")
            if state.stdout.strip() in ("running", "degraded"):
                break
            time.sleep(1)
        assert state.stdout.strip() in ("running", "degraded"), state.stdout + state.stderr
        tmp = tmp_path_factory.mktemp("systemd")
        (tmp / "digest.py").write_text(DIGEST)
        subprocess.run(["docker", "cp", str(tmp / "digest.py"), f"{name}:/usr/local/lib/kw-digest.py"], check=True, capture_output=True)

        def read(path: Path) -> dict[str, str]:
            unit = f"kwq-{path.stem}"
            subprocess.run(["docker", "cp", str(path), f"{name}:/etc/{unit}.env"], check=True, capture_output=True)
            (tmp / f"{unit}.service").write_text(
                f"[Service]\nType=oneshot\nEnvironmentFile=/etc/{unit}.env\nExecStart=/usr/bin/python3 /usr/local/lib/kw-digest.py /run/{unit}.json\n"
            )
            subprocess.run(["docker", "cp", str(tmp / f"{unit}.service"), f"{name}:/etc/systemd/system/{unit}.service"], check=True, capture_output=True)
            assert exec_("systemctl", "daemon-reload").returncode == 0
            run = exec_("systemctl", "start", f"{unit}.service")
            assert run.returncode == 0, run.stderr + exec_("journalctl", "-u", f"{unit}.service", "--no-pager", "-n", "20").stdout
            out = exec_("cat", f"/run/{unit}.json")
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        yield read
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def readers(systemd_reader: Callable[[Path], dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Callable[[Path], dict[str, str]]]:
    v1 = shutil.which("docker-compose", path="/usr/bin:/usr/local/bin")
    assert v1, "Debian's docker-compose is not installed: scripts/dev/bootstrap test installs it"
    assert subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False).returncode == 0, f"{IMAGE} missing: scripts/ci/build-images"
    v2 = subprocess.run([str(REPO / "scripts" / "dev" / "compose-v2")], capture_output=True, text=True, check=False, timeout=600)
    assert v2.returncode == 0, f"scripts/dev/compose-v2: {v2.stderr[-2000:]}"
    tmp = tmp_path_factory.mktemp("compose")
    return {
        "bash": read_bash,
        "dotenv": read_dotenv,
        "dotenv-0.21": read_debian_dotenv,
        "systemd": systemd_reader,
        "compose-v1": compose_reader([v1], "v1", tmp),
        "compose-v2": compose_reader([v2.stdout.strip()], "v2", tmp),
    }


CASES = [(env_format, reader) for env_format, consumers in FORMATS.items() for consumer in consumers for reader in READERS[consumer]]


@pytest.mark.parametrize(("env_format", "reader"), CASES, ids=[f"{f}-{r}" for f, r in CASES])
def test_every_carried_value_reads_back_exactly(
    rendered: dict[str, Rendered], readers: dict[str, Callable[[Path], dict[str, str]]], env_format: str, reader: str
) -> None:
    file = rendered[env_format]
    started = time.monotonic()
    got = readers[reader](file.path)
    missing = sorted(set(file.expected) - set(got))
    wrong = sorted(name for name in file.expected if name in got and got[name] != file.expected[name])
    # names only (the matrix index): values never reach a failure message
    assert (missing, wrong) == ([], []), f"{reader} read {file.path.name} in {time.monotonic() - started:.1f}s"
    assert len(got) == len(file.expected)
