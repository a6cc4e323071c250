"""HTTP requests with an API key during its rotation: what a busy consumer of an internal API behind nginx sees.

The companion of test_rotation_load.py for kind api_key. A client sends GET requests with the key to the throwaway
nginx (scripts/demo/nginx) as fast as it can, from a few threads, re-reading the consumer's .env before every request
(as a consumer restarted by the rotation would), while playbooks/rotate.yml rotates the key. overlap (0 hours: the
new key is added with one reload, the old one revoked with another once the consumers hold the new one) must cost
no request at all; single_user swaps the key at `set`, and the consumer's key is refused until `distribute`: that
count is recorded, not asserted. The same client against the loopback issuer's API (provider http) checks that
provider's overlap too. Each run prints one summary line; with KEYWARDEN_BENCH_RESULTS=<dir> it is also written to
<dir>/load-api_key-<provider>-<strategy>.json (bench/rotation_load/).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_key_helpers import ADMIN, Issuer, Nginx, admin_entry, api_workspace, clone_api, digest, env_key, http_key, nginx_key, site, started, store_key
from load_helpers import MIN_RATE, LoadClient, LoadResult, rotate_under_load
from rotation_helpers import catalog, read_env

CASES = {"nginx-overlap": ("nginx", "ld_overlap"), "nginx-single_user": ("nginx", "ld_single"), "http-overlap": ("http", "ld_issuer")}


class Client(LoadClient):
    """THREADS threads sending a GET with the .env's key, re-read before each request; a new connection each time."""

    def __init__(self, ws: Any, name: str, url: str) -> None:
        super().__init__()
        self.ws, self.var, self.url = ws, f"{name.upper()}_KEY", url
        self.keys: set[str] = set()

    def operation(self) -> tuple[str, bool]:
        key = read_env(self.ws.env_dir / "app.env")[self.var]
        with self.lock:
            self.keys.add(digest(key))
        request = urllib.request.Request(self.url, headers={"X-API-Key": key})  # noqa: S310 - a loopback URL
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                response.read()
                code = str(response.status)
        except urllib.error.HTTPError as exc:
            code = str(exc.code)
        except (urllib.error.URLError, OSError) as exc:
            code = type(exc).__name__  # no answer at all: a dropped request
        return code, code == "200"


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[Nginx, Issuer]]:
    with started([name for provider, name in CASES.values() if provider == "nginx"]) as both:
        yield both


@pytest.fixture(scope="module")
def template(make_workspace: Callable[..., Any], providers: tuple[Nginx, Issuer]) -> Any:
    nginx, issuer = providers
    secrets = {"ld_overlap": nginx_key("ld_overlap"), "ld_single": nginx_key("ld_single", strategy="single_user"), "ld_issuer": http_key("ld_issuer", issuer)}
    ws = api_workspace(make_workspace, "api-load-template", catalog({**secrets, ADMIN: admin_entry()}), nginx)
    site(ws, issuer)
    return ws


@pytest.mark.parametrize("case", list(CASES))
def test_requests_during_a_rotation(
    workspace: Callable[..., Any],
    template: Any,
    providers: tuple[Nginx, Issuer],
    case: str,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, Any], None],
) -> None:
    nginx, issuer = providers
    provider, name = CASES[case]
    ws = clone_api(workspace, template, "load", nginx)
    old = store_key(ws, name)
    url = nginx.url(name) if provider == "nginx" else f"{issuer.base_url}/whoami"
    client = Client(ws, name, url)
    run = rotate_under_load(client, ws, name)
    strategy = "single_user" if name == "ld_single" else "overlap"
    statuses = dict(sorted((client.successes + client.failure_labels).items()))
    result = LoadResult.of(client, run, {"provider": provider, "strategy": strategy}, "requests", {"statuses": statuses, "keys_used": len(client.keys)})
    result.record(f"api_key {provider} {strategy}", f"{len(client.keys)} keys used, statuses {statuses}", capsys, record_property)

    assert result.rate >= MIN_RATE, f"the client managed {result.rate}/s, below {MIN_RATE}/s: the run proves nothing"
    new = store_key(ws, name)
    assert new is not None and old is not None and digest(new[1]) != digest(old[1])
    assert digest(env_key(ws, name)) == digest(new[1])
    # the client moved from the old key to the new one while sending requests
    assert client.keys == {digest(old[1]), digest(new[1])}
    if strategy == "overlap":
        assert result.failed == 0, f"{result.failed} requests failed during an overlap rotation: {statuses}"
