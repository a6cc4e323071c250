# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificates issued by an internal CA (kind ``tls_cert``; the CA is a ``tls_ca`` secret of its own).

Strategy ``reissue`` (issue new, then retire the old by expiry): a rotation issues a new key and certificate on the
controller (plugin_utils/tls.py) *as the pending value*, before anything is touched, and checks it (signed by the
CA, key pair, names, validity). No server holds a certificate the way a database holds a login, so a rotation has
no target hosts: the engine distributes it at once. Its consumers get the files (keywarden_env: a key and the
certificate with its chain, swapped in one rename) and reload; the old files stay until the next delivery, so a
failed health check puts them back. The outgoing certificate stays valid until its own not_after (nothing to revoke).

Due (``due``): by age, or when less than the policy's ``renew_before_days`` (default: a third of the certificate's
lifetime, cert-manager's rule) remains, an expired certificate included; when it no longer carries the catalog's
names or key type; and when it was issued by a CA certificate that is not the CA's current one (after a CA
rotation, the certificates move to the new CA on the next run). A renewal never ends before the certificate it
replaces, and never after its CA.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils import tls
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Driver, Item, Outcomes, Target
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError

ISSUER_FIELDS = ("certificate", "private_key")


def _fields(data: dict[str, Any] | None, name: str) -> dict[str, Any]:
    return (((data or {}).get("secrets") or {}).get(name) or {}).get("current", {}).get("fields") or {}


class CertificateDriver(Driver):
    """What both certificate kinds share: targetless (nothing to set, test or revoke), due by remaining lifetime."""

    def set(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return {item.name: None for item in items}

    def test(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return {item.name: None for item in items}

    def ca_certificate(self, entry: dict[str, Any], data: dict[str, Any] | None) -> str | None:
        return None

    def due(self, entry: dict[str, Any], stored: dict[str, Any], data: dict[str, Any], now: float) -> bool:
        if super().due(entry, stored, data, now):
            return True
        return tls.due(entry, stored["current"].get("fields") or {}, self.ca_certificate(entry, data), now)


class TlsCertDriver(CertificateDriver):
    kind = "tls_cert"

    def ca_certificate(self, entry: dict[str, Any], data: dict[str, Any] | None) -> str | None:
        # the CA's public certificate: which CA issued a certificate is not a secret
        value = _fields(data, entry["target"]["ca"]).get("certificate")
        return str(value) if value else None

    def needs(self, entry: dict[str, Any]) -> list[tuple[str, str]]:
        return [(entry["target"]["ca"], field) for field in ISSUER_FIELDS]

    def rotatable(self, entry: dict[str, Any], stored: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> str | None:
        if stored is None or stored.get("pending"):
            return None  # a pending certificate was issued already: resuming it needs no CA
        return tls.cannot_issue(entry, stored["current"].get("fields"), self.ca_certificate(entry, data), time.time())

    def new_fields(self, entry: dict[str, Any], current: dict[str, str], peers: Mapping[tuple[str, str], str] | None = None) -> dict[str, str]:
        ca = entry["target"]["ca"]
        issuer = {field: (peers or {}).get((ca, field), "") for field in ISSUER_FIELDS}
        try:
            return tls.issue_certificate(entry, issuer, current, time.time(), "new certificate")
        except tls.TLSError as exc:
            raise StoreError(str(exc)) from None


DRIVER = TlsCertDriver()
