"""A small CA for the broker: its own root, a server certificate, and client certificates.

EC P-256 keys, SHA-256 signatures. The CA signs; it is kept beside the rest (`ca.key`, 0600) so
that more client certificates can be made later. Keys are written 0600, certificates 0644; the
server's key 0640 in the broker's group, which Mosquitto reads it as once it has dropped root.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825  # the longest a TLS server certificate is accepted by browsers; good for devices too

Key = ec.EllipticCurvePrivateKey


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "linli"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _write_key(path: Path, key: Key, gid: int | None = None) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    mode = 0o600 if gid is None else 0o640
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, mode)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


def _load(folder: Path) -> tuple[Key, x509.Certificate]:
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{folder / 'ca.key'} is not the EC key this command writes")
    return key, x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())


def make_ca(folder: Path, name: str = "linli broker CA") -> bool:
    """The CA in `folder` (ca.key, ca.crt); an existing one is kept. True when made now."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "ca.key").exists() and (folder / "ca.crt").exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write_key(folder / "ca.key", key)
    _write_cert(folder / "ca.crt", cert)
    return True


def make_leaf(
    folder: Path, stem: str, common: str, *, server_names: list[str] | None = None, gid: int | None = None
) -> None:
    """`{stem}.key` and `{stem}.crt` signed by the CA: a server (with its names) or a client.
    With `gid`, the key is readable by that group too (the broker's, for its own key)."""
    ca_key, ca_cert = _load(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names is not None else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server_names is not None:
        alt: list[x509.GeneralName] = []
        for n in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    _write_key(folder / f"{stem}.key", key, gid)
    _write_cert(folder / f"{stem}.crt", builder.sign(ca_key, hashes.SHA256()))
