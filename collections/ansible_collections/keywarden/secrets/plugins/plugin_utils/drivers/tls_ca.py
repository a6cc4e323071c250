# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The internal CA (kind ``tls_ca``): its key lives in the store, and never leaves the controller.

A rotation makes a new key and self-signed CA certificate (plugin_utils/tls.py) whose ``trust_bundle`` holds the new
certificate and the one it replaces (while that is valid): consumers of the CA (clients) get the overlapping bundle
first, so that certificates of the old CA keep verifying. On the following run every ``tls_cert`` of the CA is due
(issued by a CA certificate that is no longer current) and is reissued by the new CA; the old CA leaves the bundle
at the CA's next rotation, or when it expires. Due by age, or when less than a third of its lifetime remains.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils import tls
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.tls_cert import CertificateDriver
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError


class TlsCaDriver(CertificateDriver):
    kind = "tls_ca"

    def new_fields(self, entry: dict[str, Any], current: dict[str, str], peers: Mapping[tuple[str, str], str] | None = None) -> dict[str, str]:
        try:
            return tls.issue_ca(entry, current, time.time(), "new CA certificate")
        except tls.TLSError as exc:
            raise StoreError(str(exc)) from None


DRIVER = TlsCaDriver()
