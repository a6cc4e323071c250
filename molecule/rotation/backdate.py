"""Test tool: mark every current value of a store as created in 2000, so all of them are due.

Usage: backdate.py STORE_DIR ENVIRONMENT   (the vault password comes from the keywarden password client)
"""

import os
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
from ansible.parsing.vault import VaultSecret

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store


def main() -> None:
    store_dir, environment = sys.argv[1], sys.argv[2]
    client = os.path.join(REPO, "scripts", "secrets", "vault-password-client")
    password = subprocess.run([sys.executable, client, "--vault-id", environment], capture_output=True, check=True).stdout.strip()
    store = Store(store_dir, environment, [(environment, VaultSecret(password))])
    with store.update() as data:
        for entry in data["secrets"].values():
            entry["current"]["created"] = "2000-01-01T00:00:00Z"


if __name__ == "__main__":
    main()
