"""Stand-in for the get-pip bootstrap script that `ansible-test sanity --venv` downloads from a host this CI
cannot reach. scripts/dev/test-all copies it to ~/.ansible/test/cache/get_pip_<version>.py when that is missing.

Like get-pip, it installs pip (and what it is asked for) into the running interpreter: ensurepip first (pip bundled
with Python), then `pip install` of the requested packages from the package index this machine can reach.
"""

import ensurepip
import os
import subprocess
import sys

# get-pip's own flags, which pip install does not take
_GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    ensurepip.bootstrap(upgrade=True)
    args = [arg for arg in sys.argv[1:] if arg not in _GET_PIP_ONLY]
    # ansible-test runs this with a trimmed environment: give pip the machine's CA bundle (a TLS-inspecting proxy's
    # CA lives there) when there is one
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    if os.path.isfile(bundle):
        args = ["--cert", bundle, *args]
    return subprocess.call([sys.executable, "-m", "pip", "install", *args])


if __name__ == "__main__":
    sys.exit(main())
