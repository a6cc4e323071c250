"""The app and the worker consume the same database login: compared once, from kw-app, as digests."""

import os

import testinfra
from test_default import DB_VARS, env_digests

# one host for this module (not every host, which would need a skip on the others)
_INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
testinfra_hosts = [f"ansible://kw-app?ansible_inventory={_INVENTORY}"]


def test_app_and_worker_share_the_database_login(host):
    worker_host = testinfra.get_host("ansible://kw-worker", ansible_inventory=_INVENTORY)
    app, worker = env_digests(host, "app"), env_digests(worker_host, "worker")
    assert set(app) >= DB_VARS and set(worker) >= DB_VARS
    for name in sorted(DB_VARS):
        assert app[name] == worker[name], f"{name} differs between app.env and worker.env"
