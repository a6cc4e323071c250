"""Test tool: mark every current value that keywarden can rotate as created in 2000, so all of them are due.

Usage: backdate.py STORE_DIR ENVIRONMENT   (the vault password comes from the keywarden password client)

Only secrets the engine can rotate are backdated (a driver for their kind, and the driver does not say why not: an API
key of provider manual): an overdue secret it cannot rotate makes the rotation fail by design (naming it), which
tests/integration/test_rotation_api_key.py covers; here the scenario proves that everything rotatable rotates.
"""

import os
import subprocess
import sys

from ansible.parsing.vault import VaultSecret

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import load_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CATALOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config", "secrets", "catalog.yml")


def main() -> None:
    store_dir, environment = sys.argv[1], sys.argv[2]
    client = os.path.join(REPO, "scripts", "secrets", "vault-password-client")
    password = subprocess.run([sys.executable, client, "--vault-id", environment], capture_output=True, check=True).stdout.strip()
    store = Store(store_dir, environment, [(environment, VaultSecret(password))])
    catalog = load_catalog(CATALOG)["secrets"]
    with store.update() as data:
        for name, entry in data["secrets"].items():
            driver = driver_for(entry["kind"])
            if driver is not None and name in catalog and driver.rotatable(catalog[name]) is None:
                entry["current"]["created"] = "2000-01-01T00:00:00Z"


if __name__ == "__main__":
    main()
