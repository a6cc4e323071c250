# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificates of an internal CA (catalog kinds ``tls_ca`` and ``tls_cert``), made on the controller.

Keys, CSRs and certificates are made by community.crypto's own code — the backends of ``openssl_privatekey``,
``openssl_csr`` and ``x509_certificate`` (providers ``selfsigned`` for a CA, ``ownca`` for a certificate) — run in
this process, not as module runs. Why:

- the CA key then exists only in the memory of the process that holds the store's lock: it is read from the store,
  handed to the ``ownca`` backend as ``ownca_privatekey_content`` and never written anywhere, not even to a temp
  file (a module run would carry it in its arguments, which Ansible writes to a temp file on the controller unless
  pipelining is on);
- issuing is part of the rotation's create step, which must persist each pending value before anything else is
  touched, in one store write: module runs would need the new key in a registered variable first;
- a module run costs about 0.3 s; 50 certificates would take three module runs each.

The backends are community.crypto's private API (``module_utils/_crypto``), pinned by the ansible bundle in
requirements.txt; ``_Backend`` gives them what they use of an AnsibleModule (validated ``params``, ``warn``,
``fail_json``), with their own argument specs, so their defaults and checks are the modules' own.

Guarantees: a renewal never ends earlier than the certificate it replaces; a certificate never outlives its CA; every
certificate is checked before it is returned (signed by its CA, key pair, names, validity); errors never hold a key.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
import warnings
from typing import Any

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import KEY_TYPES

DAY = 86400.0
# a new certificate is valid from a minute before it is made (clocks of consumers that lag a little)
BACKDATE = 60.0
_ASN1 = "%Y%m%d%H%M%SZ"


class TLSError(Exception):
    """A certificate problem: one line, naming what to fix; never a key or a certificate."""


def _crypto() -> Any:
    """community.crypto's backends, imported on first use (only certificate kinds need them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # see _run
        from ansible_collections.community.crypto.plugins.module_utils._crypto.basic import OpenSSLObjectError  # noqa: PLC0415
        from ansible_collections.community.crypto.plugins.module_utils._crypto.module_backends import (  # noqa: PLC0415
            certificate,
            certificate_ownca,
            certificate_selfsigned,
            csr,
            privatekey,
        )
    return certificate, certificate_ownca, certificate_selfsigned, csr, privatekey, OpenSSLObjectError


class _Backend:
    """What community.crypto's module backends use of an AnsibleModule, for a run in this process."""

    check_mode = False

    def __init__(self, spec: Any, params: dict[str, Any], what: str) -> None:
        validator = ArgumentSpecValidator(
            spec.argument_spec, spec.mutually_exclusive, spec.required_together, spec.required_one_of, spec.required_if, spec.required_by
        )
        result = validator.validate(params)
        self.what = what
        if result.error_messages:
            # option names and choices only: the validator never quotes a no_log option's value
            raise TLSError(f"{what}: {result.error_messages[0]}")
        self.params = result.validated_parameters

    def warn(self, msg: str) -> None:
        """community.crypto warns about deprecated curves only; the catalog offers none."""

    def fail_json(self, msg: str = "", **_kwargs: Any) -> Any:
        raise TLSError(f"{self.what}: {str(msg).splitlines()[0] if msg else 'failed'}")


def _run(what: str, step: Any) -> Any:
    error = _crypto()[-1]
    try:
        with warnings.catch_warnings():
            # community.crypto's key type checks name DH classes that `cryptography` deprecates: not for the output
            warnings.simplefilter("ignore")
            return step()
    except error as exc:
        raise TLSError(f"{what}: {str(exc).splitlines()[0]}") from None


def new_key(key_type: str, what: str) -> str:
    """A fresh private key (PEM, PKCS#8, unencrypted), as openssl_privatekey makes it."""
    privatekey = _crypto()[4]

    def make() -> str:
        module = _Backend(privatekey.get_privatekey_argument_spec(), {**KEY_TYPES[key_type], "format": "pkcs8"}, what)
        backend = privatekey.select_backend(module)
        backend.generate_private_key()
        return str(backend.get_private_key_data().decode())

    return str(_run(what, make))


def _csr(key: str, params: dict[str, Any], what: str) -> str:
    """A certificate signing request for ``key``, as openssl_csr makes it."""
    csr = _crypto()[3]

    def make() -> str:
        module = _Backend(csr.get_csr_argument_spec(), {"privatekey_content": key, "use_common_name_for_san": False, **params}, what)
        backend = csr.select_backend(module)
        backend.generate_csr()
        return str(backend.get_csr_data().decode())

    return str(_run(what, make))


def _asn1(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(_ASN1)


def _sign(request: str, params: dict[str, Any], provider: str, what: str) -> str:
    """A certificate for ``request``, as x509_certificate makes it with the ``selfsigned`` or ``ownca`` provider."""
    certificate, certificate_ownca, certificate_selfsigned = _crypto()[:3]

    def make() -> str:
        spec = certificate.get_certificate_argument_spec()
        if provider == "ownca":
            certificate_ownca.add_ownca_provider_to_argument_spec(spec)
            chosen: Any = certificate_ownca.OwnCACertificateProvider()
        else:
            certificate_selfsigned.add_selfsigned_provider_to_argument_spec(spec)
            chosen = certificate_selfsigned.SelfSignedCertificateProvider()
        module = _Backend(spec, {"provider": provider, "csr_content": request, **params}, what)
        backend = certificate.select_backend(module=module, provider=chosen)
        backend.generate_certificate()
        return str(backend.get_certificate_data().decode())

    return str(_run(what, make))


# ---- reading certificates ------------------------------------------------------------------------------
def _load(pem: Any) -> list[Any]:
    from cryptography import x509  # noqa: PLC0415

    try:
        found = x509.load_pem_x509_certificates(str(pem).encode())
    except (ValueError, TypeError):
        found = []
    if not found:
        # the library's message could quote the input: never pass it on
        raise TLSError("not a PEM X.509 certificate")
    return found


def _fingerprint(cert: Any) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415

    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _key_type(public_key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: PLC0415

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ecdsa_p256", "secp384r1": "ecdsa_p384"}.get(public_key.curve.name, public_key.curve.name)
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa_{public_key.key_size}"
    return type(public_key).__name__


def _names(cert: Any) -> tuple[str | None, list[str]]:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (str(common[0].value) if common else None), []
    names = [f"DNS:{name}" for name in san.get_values_for_type(x509.DNSName)]
    names += [f"IP:{address}" for address in san.get_values_for_type(x509.IPAddress)]
    return (str(common[0].value) if common else None), sorted(names)


def info(pem: Any) -> dict[str, Any]:
    """What a stored certificate field says (its first certificate: the leaf): dates, fingerprint, names, key type.
    Public facts only."""
    cert = _load(pem)[0]
    common, names = _names(cert)
    not_before = cert.not_valid_before_utc.timestamp()
    not_after = cert.not_valid_after_utc.timestamp()
    return {
        "not_before": not_before,
        "not_after": not_after,
        "lifetime": max(0.0, not_after - not_before),
        "fingerprint": _fingerprint(cert),
        "common_name": common,
        "names": names,
        "key_type": _key_type(cert.public_key()),
    }


def fingerprint(pem: Any) -> str:
    """SHA-256 of the DER of the first certificate of a PEM text."""
    return _fingerprint(_load(pem)[0])


def subject_alt_names(target: dict[str, Any]) -> list[str]:
    """The subject alternative names the catalog asks for, sorted (the common name when it names none)."""
    dns = list(target.get("dns_names") or [])
    addresses = [str(ipaddress.ip_address(item)) for item in target.get("ip_addresses") or []]
    if not dns and not addresses:
        dns = [target["common_name"]]
    return sorted([f"DNS:{name}" for name in dns] + [f"IP:{address}" for address in addresses])


def renew_before(cert: dict[str, Any], policy: dict[str, Any]) -> float:
    """Seconds before not_after when a certificate is due: the policy's renew_before_days, else a third of the
    certificate's own lifetime (cert-manager's rule)."""
    if policy.get("renew_before_days"):
        return float(policy["renew_before_days"]) * DAY
    return cert["lifetime"] / 3.0


# ---- what is due, what can be issued -------------------------------------------------------------------
def due(entry: dict[str, Any], fields: dict[str, Any], ca_certificate: str | None, now: float) -> bool:
    """Whether a stored certificate must be renewed now, apart from its age: it does not parse, less than
    ``renew_before`` of its validity remains (an expired one too), or (tls_cert) it no longer matches the catalog
    (names, key type) or was issued by a CA certificate that is no longer the CA's current one (a CA rotation)."""
    try:
        cert = info(fields.get("certificate"))
    except TLSError:
        return True
    if cert["not_after"] - now <= renew_before(cert, entry["policy"]):
        return True
    if cert["key_type"] != entry["policy"]["key_type"]:
        return True
    if entry["kind"] != "tls_cert":
        return False
    if cert["common_name"] != entry["target"]["common_name"] or cert["names"] != subject_alt_names(entry["target"]):
        return True
    if ca_certificate is None:
        return False
    try:
        return fingerprint(fields.get("chain")) != fingerprint(ca_certificate)
    except TLSError:
        return True


def _not_after(entry: dict[str, Any], current: dict[str, Any] | None, now: float) -> float:
    """now + lifetime, or the not_after of the certificate being replaced when that is later: a renewal never
    shortens a certificate's validity."""
    wanted = now + entry["policy"]["lifetime_days"] * DAY
    if current and current.get("certificate"):
        try:
            wanted = max(wanted, info(current["certificate"])["not_after"])
        except TLSError:
            pass  # a certificate that does not parse has no validity to keep
    return wanted


def cannot_issue(entry: dict[str, Any], current: dict[str, Any] | None, ca_certificate: str | None, now: float) -> str | None:
    """None when the CA can issue this certificate's renewal; else why not and what to do (one line, no value)."""
    ca = entry["target"]["ca"]
    if ca_certificate is None:
        return f"its CA '{ca}' is not in the store: run playbooks/init.yml"
    try:
        ca_until = info(ca_certificate)["not_after"]
    except TLSError:
        return f"the certificate of its CA '{ca}' does not parse: restore the store, or rotate the CA (keywarden_rotate_only={ca})"
    if ca_until <= now + BACKDATE:
        return f"its CA '{ca}' expired on {_day(ca_until)}: rotate the CA first (keywarden_rotate_only={ca}), then this certificate"
    if _not_after(entry, current, now) > ca_until and current and current.get("certificate"):
        try:
            until = info(current["certificate"])["not_after"]
        except TLSError:
            return None
        if until > ca_until:
            return (
                f"its CA '{ca}' expires on {_day(ca_until)}, before the current certificate ({_day(until)}): a renewal would shorten its validity; "
                f"rotate the CA first (keywarden_rotate_only={ca})"
            )
    return None


def _day(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d")


# ---- issuing -------------------------------------------------------------------------------------------
def issue_ca(entry: dict[str, Any], current: dict[str, Any] | None, now: float, what: str) -> dict[str, str]:
    """A new CA: key, self-signed certificate, and the trust bundle consumers get: this certificate, then the CA
    certificate it replaces while that is still valid (so that certificates it issued keep verifying until they are
    renewed by the new CA)."""
    policy, target = entry["policy"], entry["target"]
    not_after = _not_after(entry, current, now)
    key = new_key(policy["key_type"], what)
    # the issue time and a random tag in the subject: after a CA rotation, the old and the new CA never share a name
    subject = {"CN": target["common_name"], "OU": f"keywarden CA {_asn1(now)} {secrets.token_hex(4)}"}
    request = _csr(
        key,
        {
            "subject": subject,
            "basic_constraints": ["CA:TRUE", "pathlen:0"],
            "basic_constraints_critical": True,
            "key_usage": ["keyCertSign", "cRLSign", "digitalSignature"],
            "key_usage_critical": True,
            "create_subject_key_identifier": True,
        },
        what,
    )
    certificate = _sign(
        request,
        {"privatekey_content": key, "selfsigned_not_before": _asn1(now - BACKDATE), "selfsigned_not_after": _asn1(not_after)},
        "selfsigned",
        what,
    )
    bundle = [certificate]
    if current and current.get("certificate"):
        try:
            if info(current["certificate"])["not_after"] > now:
                bundle.append(str(current["certificate"]))
        except TLSError:
            pass
    fields = {"certificate": certificate, "private_key": key, "trust_bundle": "".join(_pem(item) for item in bundle)}
    _check_ca(entry, fields, now, what)
    return fields


def issue_certificate(entry: dict[str, Any], ca: dict[str, str], current: dict[str, Any] | None, now: float, what: str) -> dict[str, str]:
    """A new key and certificate issued by ``ca`` (its current ``certificate`` and ``private_key``), with the catalog's
    names, valid for the policy's lifetime (never ending before ``current``'s, never after the CA's)."""
    why_not = cannot_issue(entry, current, ca.get("certificate"), now)
    if why_not:
        raise TLSError(f"{what}: {why_not}")
    policy, target = entry["policy"], entry["target"]
    not_after = min(_not_after(entry, current, now), info(ca["certificate"])["not_after"])
    key = new_key(policy["key_type"], what)
    usage = ["digitalSignature", "keyEncipherment"] if policy["key_type"].startswith("rsa") else ["digitalSignature"]
    request = _csr(
        key,
        {
            "subject": {"CN": target["common_name"]},
            "subject_alt_name": subject_alt_names(target),
            "basic_constraints": ["CA:FALSE"],
            "basic_constraints_critical": True,
            "key_usage": usage,
            "key_usage_critical": True,
            "extended_key_usage": ["serverAuth", "clientAuth"],
        },
        what,
    )
    leaf = _sign(
        request,
        {
            "ownca_content": ca["certificate"],
            "ownca_privatekey_content": ca["private_key"],
            "ownca_not_before": _asn1(now - BACKDATE),
            "ownca_not_after": _asn1(not_after),
        },
        "ownca",
        what,
    )
    chain = _pem(ca["certificate"])
    fields = {"certificate": _pem(leaf) + chain, "chain": chain, "private_key": key}
    check_certificate(entry, fields, now, what)
    return fields


def _pem(text: str) -> str:
    return text.strip() + "\n"


def _matches(key_pem: str, cert: Any) -> bool:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key  # noqa: PLC0415

    try:
        key = load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return bool(key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki))


def _check_ca(entry: dict[str, Any], fields: dict[str, str], now: float, what: str) -> None:
    cert = _load(fields["certificate"])[0]
    if not _matches(fields["private_key"], cert):
        raise TLSError(f"{what}: the new CA certificate does not match its key")
    if not cert.not_valid_before_utc.timestamp() <= now < cert.not_valid_after_utc.timestamp():
        raise TLSError(f"{what}: the new CA certificate is not valid now")


def check_certificate(entry: dict[str, Any], fields: dict[str, str], now: float, what: str) -> None:
    """The proof a certificate's renewal makes before it is stored: issued by its chain's CA (signature), its key pair,
    the catalog's names and key type, valid now. Raises TLSError naming what is wrong."""
    leaf, *rest = _load(fields["certificate"])
    issuer = _load(fields["chain"])[0]
    if not rest or _fingerprint(rest[0]) != _fingerprint(issuer):
        raise TLSError(f"{what}: the certificate field does not carry its chain")
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415

    try:
        leaf.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise TLSError(f"{what}: the new certificate is not signed by its CA ({type(exc).__name__})") from None
    if not _matches(fields["private_key"], leaf):
        raise TLSError(f"{what}: the new certificate does not match its key")
    got = info(fields["certificate"])
    if got["names"] != subject_alt_names(entry["target"]) or got["common_name"] != entry["target"]["common_name"]:
        raise TLSError(f"{what}: the new certificate does not carry the catalog's names")
    if got["key_type"] != entry["policy"]["key_type"]:
        raise TLSError(f"{what}: the new certificate's key is {got['key_type']}, not {entry['policy']['key_type']}")
    if not got["not_before"] <= now < got["not_after"]:
        raise TLSError(f"{what}: the new certificate is not valid now")


# ---- the public CA material next to the store ----------------------------------------------------------
CA_DIR = "ca"
PUBLIC_MODE = 0o644


def ca_dir(store_dir: str) -> str:
    """``inventories/<env>/ca`` for the default store dir ``inventories/<env>/store``: the directory the backup
    playbook archives (keywarden_backup_ca_dir). Public material only: a CA's key never leaves the store."""
    return os.path.join(os.path.dirname(os.path.abspath(store_dir)), CA_DIR)


def publish_ca(store_dir: str, data: dict[str, Any], names: list[str]) -> list[str]:
    """Write each CA's current certificate (``<name>.crt``) and trust bundle (``<name>.trust.pem``) to ca_dir, mode
    0644, atomically (temp file, fsync, rename), only when they differ; returns the paths written."""
    from ansible_collections.keywarden.secrets.plugins.plugin_utils.report import ReportError, write_atomic  # noqa: PLC0415

    directory = ca_dir(store_dir)
    written = []
    for name in sorted(names):
        fields = ((data["secrets"].get(name) or {}).get("current") or {}).get("fields") or {}
        for suffix, field in ((".crt", "certificate"), (".trust.pem", "trust_bundle")):
            if not fields.get(field):
                continue
            path = os.path.join(directory, name + suffix)
            try:
                if write_atomic(path, str(fields[field]), PUBLIC_MODE):
                    written.append(path)
            except ReportError as exc:
                raise TLSError(f"the public CA certificates cannot be written next to the store: {exc}") from None
    return written
