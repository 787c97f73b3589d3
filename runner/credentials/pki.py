"""The embedded cluster's certificates and keys, generated fresh for every run.

ECDSA P-256 everywhere: generation takes milliseconds, and kube-apiserver accepts ES256 for
ServiceAccount token signing. Nothing here is ever written under results/.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = dt.timedelta(days=2)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Pki:
    """Paths of everything kube-apiserver and its clients need."""

    dir: Path
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path
    #: kept so that more certificates can be issued later (the local cluster's node and components)
    ca_key: Path | None = None


def generate(directory: Path, ip_sans: list[str], dns_sans: list[str]) -> Pki:
    """A CA, a serving cert naming every address a client may dial, an admin client cert, SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("watchdrop-ca"))
        .issuer_name(_name("watchdrop-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, org: str | None, usage: x509.ObjectIdentifier,
             sans: list[x509.GeneralName]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        return _sign_leaf(ca, ca_key, cn, org, [usage], sans, now)

    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_sans]
    sans += [x509.DNSName(d) for d in dns_sans]
    serving, serving_key = leaf("kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    admin, admin_key = leaf("watchdrop-admin", "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    sa_key = _key()

    pki = Pki(
        dir=directory,
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        ca_key=directory / "ca.key",
    )
    pem = serialization.Encoding.PEM
    pki.ca_cert.write_bytes(ca.public_bytes(pem))
    pki.serving_cert.write_bytes(serving.public_bytes(pem))
    pki.admin_cert.write_bytes(admin.public_bytes(pem))
    assert pki.ca_key is not None
    for path, key in ((pki.serving_key, serving_key), (pki.admin_key, admin_key), (pki.sa_key, sa_key),
                      (pki.ca_key, ca_key)):
        path.write_bytes(_pem_key(key))
        path.chmod(0o600)
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(
        pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def _sign_leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, org: str | None,
               usages: list[x509.ObjectIdentifier], sans: list[x509.GeneralName],
               now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key and a certificate for it, signed by the CA."""
    key = _key()
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALID)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def issue(pki: Pki, name: str, *, cn: str, org: str | None = None, server_ips: list[str] | None = None,
          client: bool = True) -> tuple[Path, Path]:
    """Sign one more leaf certificate with the run's CA: `<dir>/<name>.crt` and `.key`.

    A client certificate by default (CN = user, O = group); with `server_ips` also a serving one
    that names those addresses (the kubelet's serving certificate)."""
    if pki.ca_key is None:
        raise ValueError("this Pki kept no CA key")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + (
        [ExtendedKeyUsageOID.SERVER_AUTH] if server_ips else [])
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in server_ips or []]
    cert, key = _sign_leaf(ca, ca_key, cn, org, usages, sans, now)
    cert_path, key_path = pki.dir / f"{name}.crt", pki.dir / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    key_path.chmod(0o600)
    return cert_path, key_path


def issue_front(pki: Pki, name: str) -> Path:
    """A serving certificate for an L7 front, signed by the run's CA and naming every address and
    name kube-apiserver's own certificate names (the VIPs, the fronts, the `kubernetes` Service), so
    a client that verifies kube-apiserver verifies the front the same way: `<dir>/<name>.pem`, the
    certificate then its key in one 0600 file, the form HAProxy's `crt` reads.

    Its own key and subject (CN watchdrop-front), not kube-apiserver's: what a client meets is the
    front, as on a managed L7 front, and the evidence can tell the two apart."""
    if pki.ca_key is None:
        raise ValueError("this Pki kept no CA key")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    sans = list(serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert, key = _sign_leaf(ca, ca_key, "watchdrop-front", None, [ExtendedKeyUsageOID.SERVER_AUTH], sans, now)
    path = pki.dir / f"{name}.pem"
    # Created 0600 before the key is written: the key is never readable by others, even briefly.
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + _pem_key(key))
    return path
