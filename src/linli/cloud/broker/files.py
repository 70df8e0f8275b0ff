"""The broker's files: Mosquitto's password file, its rights, its config, and the secrets beside them.

The secrets (each identity's password in clear) go to `secrets/` under the output folder, mode
0700, each file 0600: only the user who ran the command (root, on a real host) reads them. They
are never printed. The password hashes and the rights are 0640 and, written by root, belong to
the broker's group: Mosquitto started as root drops to its own user before it reads them.
Running again keeps every existing password; a new identity gets a new one; `rotate` names the
identities to get a new one anyway.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from linli.cloud.broker import dynsec, emqx
from linli.cloud.broker.identities import Identity

ITERATIONS = 1000  # PBKDF2-SHA512 rounds per password (mosquitto_passwd uses 101)
SECRETS = "secrets"
INDEX = "identities.json"
EMQX = "emqx"  # the folder of EMQX's files, beside Mosquitto's
BROKER_GROUP = "mosquitto"  # the group Debian's Mosquitto runs as, after it drops root


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Mosquitto's `$7$` password hash: PBKDF2-HMAC-SHA512 over a 12-byte salt."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class Written:
    """What a run did: identities added, kept, rotated and dropped."""

    added: list[str]
    kept: list[str]
    rotated: list[str]
    dropped: list[str]
    # Files the broker may not be able to read: root wrote them and there is no such group here.
    unshared: list[str] = field(default_factory=list)


def env_name(identity: str) -> str:
    """The secrets file of one identity: `edge/hongqiao` -> `edge-hongqiao.env`."""
    return identity.replace("/", "-") + ".env"


def write(
    out: Path,
    identities: Iterable[Identity],
    *,
    rotate: Iterable[str] = (),
    conf: str,
    emqx_conf: str | None = None,
    group: str = BROKER_GROUP,
) -> Written:
    """Write passwd, acl, mosquitto.conf and the secrets under `out`; EMQX's files under `out/emqx`."""
    idents = list(identities)
    names = [i.name for i in idents]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"identities named twice: {', '.join(twice)} (a device id repeated at one site?)")
    unknown = sorted(set(rotate) - set(names))
    if unknown:
        raise ValueError(f"--rotate names no identity: {', '.join(unknown)}")
    out.mkdir(parents=True, exist_ok=True)
    vault = out / SECRETS
    vault.mkdir(mode=0o700, exist_ok=True)
    vault.chmod(0o700)
    index = vault / INDEX
    old: dict[str, str] = json.loads(index.read_text()) if index.exists() else {}
    rotate = set(rotate)
    passwords: dict[str, str] = {}
    added: list[str] = []
    kept: list[str] = []
    rotated: list[str] = []
    for name in names:
        if name in old and name not in rotate:
            passwords[name] = old[name]
            kept.append(name)
        else:
            passwords[name] = secrets.token_urlsafe(24)
            (rotated if name in old else added).append(name)
    dropped = sorted(set(old) - set(names))
    _private(index, json.dumps(passwords, indent=1, sort_keys=True) + "\n")
    for ident in idents:
        lines = [f"{user}={ident.name}\n{pw}={passwords[ident.name]}\n" for user, pw in ident.env]
        lines = lines or [f"LINLI_MQTT_USERNAME={ident.name}\nLINLI_MQTT_PASSWORD={passwords[ident.name]}\n"]
        if ident.client_id:
            lines.append(f"LINLI_MQTT_CLIENT_ID={ident.client_id}\n")  # the only one it may use
        _private(vault / env_name(ident.name), "".join(lines))
    for name in dropped:
        (vault / env_name(name)).unlink(missing_ok=True)
    # The hashes are no secret worth a root-only file, but nobody but the broker needs them.
    gid = broker_gid(group)
    _private(out / "passwd", "".join(f"{n}:{hash_password(passwords[n])}\n" for n in names), 0o640, gid)
    _private(out / "dynsec.json", dynsec.config(idents), 0o640, gid)
    (out / "mosquitto.conf").write_text(conf)
    (out / "acl").unlink(missing_ok=True)  # an earlier version's, which Mosquitto no longer reads
    unshared = ["passwd", "dynsec.json"] if os.geteuid() == 0 and gid is None else []
    if emqx_conf is not None:
        folder = out / EMQX
        folder.mkdir(exist_ok=True)
        _private(folder / "users.csv", emqx.users_csv(passwords), mode=0o640)
        (folder / "acl.conf").write_text(emqx.acl_conf(idents))
        (folder / "emqx.conf").write_text(emqx_conf)
    return Written(added, kept, rotated, dropped, unshared)


def copy_certs(certs: Path, to: Path) -> None:
    """The broker's CA, certificate and key, for a broker that reads them from its own folder."""
    to.mkdir(mode=0o700, exist_ok=True)
    for name in ("ca.crt", "server.crt"):
        (to / name).write_bytes((certs / name).read_bytes())
    _private(to / "server.key", (certs / "server.key").read_text())


def read_secret(out: Path, identity: str) -> str:
    """One identity's password, for the tests and for provisioning a device."""
    passwords: dict[str, str] = json.loads((out / SECRETS / INDEX).read_text())
    return passwords[identity]


def broker_gid(group: str) -> int | None:
    """The broker's group when root writes the files (only root may give them away), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def _private(path: Path, text: str, mode: int = 0o600, gid: int | None = None) -> None:
    """Written with its mode (and group) from the start: never readable by others, even for a moment."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    if gid is not None:
        os.chown(tmp, -1, gid)
    tmp.replace(path)
