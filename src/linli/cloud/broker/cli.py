"""`linli broker config` and `linli broker certs`: the broker's identities, ACL and TLS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP_CONFIG = """\
Write a Mosquitto password file (a fresh random password per identity), the identities' rights
for Mosquitto's dynamic-security plugin (dynsec.json) and a mosquitto.conf that uses both, from
the configs linli already has. Identities: every MQTT device
of each edge config (device/SITE/DEVICE), each edge agent (edge/AGENT), the notifier, the waste
service (with --waste-config) and an operator, the only one who may read '#' and '$SYS'.
`linli sim district --mqtt-identities OUT/secrets/identities.json` connects each simulated
device as itself. Passwords go to OUT/secrets/ (mode 0700, files 0600, one
.env per identity with the variables its program reads); they are never printed. Running again
keeps every password; --rotate NAME gives one identity a new one. Send Mosquitto SIGHUP to load
new passwords; restart it when identities or rights changed (the plugin reads dynsec.json
only when Mosquitto starts). --emqx also writes the same identities and ACL for an EMQX
5.8 cluster to OUT/emqx/ (emqx.conf, acl.conf, users.csv; docs/scale.md).
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `linli broker`."""
    broker = subparsers.add_parser("broker", help="the MQTT broker's identities, ACL and TLS")
    cmds = broker.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config = cmds.add_parser(
        "config", help="identities, passwords and ACL from the configs", description=HELP_CONFIG
    )
    config.add_argument(
        "--edge-config", type=Path, action="append", required=True, metavar="FILE",
        help="an edge agent's TOML (repeat for each edge)",
    )  # fmt: skip
    config.add_argument("--notifier-config", type=Path, metavar="FILE", help="the notifier's TOML")
    config.add_argument("--waste-config", type=Path, metavar="FILE", help="the waste service's TOML")
    config.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write")
    config.add_argument("--port", type=int, default=1883, help="the plain listener's port (1883)")
    config.add_argument("--bind", default="", metavar="ADDR", help="listen on this address only")
    config.add_argument(
        "--certs", type=Path, metavar="DIR",
        help="a folder from `linli broker certs`: adds a TLS listener (ca.crt, server.crt, server.key)",
    )  # fmt: skip
    config.add_argument("--tls-port", type=int, default=8883, help="the TLS listener's port (8883)")
    config.add_argument(
        "--conf-dir", metavar="PATH",
        help="the folder as Mosquitto will see it (in a container: /mosquitto/config); default OUT",
    )  # fmt: skip
    config.add_argument(
        "--certs-dir", metavar="PATH", help="the certs folder as Mosquitto will see it; default CERTS"
    )
    config.add_argument(
        "--persistence", metavar="DIR", help="keep sessions and queued messages in DIR (off by default)"
    )
    config.add_argument(
        "--dynsec-plugin", metavar="PATH",
        help="mosquitto_dynamic_security.so as Mosquitto will see it; default this host's "
        "(in the eclipse-mosquitto image: /usr/lib/mosquitto_dynamic_security.so)",
    )  # fmt: skip
    config.add_argument(
        "--broker-group", default="mosquitto", metavar="GROUP",
        help="run as root, give passwd and dynsec.json to this group (mosquitto), which the broker runs as",
    )  # fmt: skip
    config.add_argument(
        "--emqx", action="store_true", help="also write EMQX's emqx.conf, acl.conf and users.csv to OUT/emqx"
    )
    config.add_argument(
        "--emqx-dir", metavar="PATH",
        help="OUT/emqx as EMQX will see it (in a container: /opt/emqx/etc/linli); default OUT/emqx",
    )  # fmt: skip
    config.add_argument(
        "--rotate", action="append", default=[], metavar="NAME", help="a new password for this identity"
    )
    config.set_defaults(func=_config)

    certs = cmds.add_parser(
        "certs",
        help="a small CA, the broker's server certificate and client certificates",
        description=(
            "Make (or keep) a CA in DIR, a server certificate for the broker's names, and a client "
            "certificate per --client NAME (NAME.crt, NAME.key). Keys are 0600."
        ),
    )
    certs.add_argument("--out", type=Path, required=True, metavar="DIR")
    certs.add_argument(
        "--server-name", action="append", default=[], metavar="NAME",
        help="a DNS name or IP address the broker is reached by (repeat; default localhost and 127.0.0.1)",
    )  # fmt: skip
    certs.add_argument("--client", action="append", default=[], metavar="NAME", help="a client certificate")
    certs.add_argument(
        "--broker-group", default="mosquitto", metavar="GROUP",
        help="run as root, let this group (mosquitto), which the broker runs as, read server.key",
    )  # fmt: skip
    certs.set_defaults(func=_certs)


def _config(args: argparse.Namespace) -> int:
    from linli.catalog.errors import ConfigError
    from linli.cloud.broker.configs import gather, mosquitto_conf
    from linli.cloud.broker.emqx import emqx_conf
    from linli.cloud.broker.files import copy_certs, write
    from linli.transit.gtfs import GtfsError

    if args.certs is not None:
        missing = [n for n in ("ca.crt", "server.crt", "server.key") if not (args.certs / n).exists()]
        if missing:
            print(
                f"linli broker config: --certs {args.certs} has no {', '.join(missing)}; "
                f"make them with `linli broker certs --out {args.certs}`",
                file=sys.stderr,
            )
            return 2
    try:
        identities = gather(args.edge_config, args.notifier_config, args.waste_config)
    except (ConfigError, GtfsError) as exc:
        print(exc, file=sys.stderr)
        return 2
    conf_dir = args.conf_dir or str(args.out.resolve())
    certs_dir = args.certs_dir or (str(args.certs.resolve()) if args.certs else None)
    conf = mosquitto_conf(
        conf_dir,
        port=args.port,
        bind=args.bind,
        certs=certs_dir,
        tls_port=args.tls_port,
        persistence=args.persistence,
        plugin=args.dynsec_plugin,
    )
    emqx = None
    if args.emqx or args.emqx_dir:
        emqx_dir = args.emqx_dir or str((args.out / "emqx").resolve())
        # EMQX's folder carries its own copy of the server's certificate and key.
        emqx_certs = f"{emqx_dir}/certs" if args.certs is not None else None
        emqx = emqx_conf(emqx_dir, port=args.port, certs=emqx_certs, tls_port=args.tls_port)
    try:
        done = write(
            args.out, identities, rotate=args.rotate, conf=conf, emqx_conf=emqx, group=args.broker_group
        )
        if emqx is not None and args.certs is not None:
            copy_certs(args.certs, args.out / "emqx" / "certs")
    except ValueError as exc:
        print(f"linli broker config: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"linli broker config: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(
        f"{len(identities)} identities: {len(done.added)} new, {len(done.kept)} kept, "
        f"{len(done.rotated)} rotated, {len(done.dropped)} dropped"
    )
    # On a first run every identity is new: listing them all would bury the rest.
    added = done.added if done.kept or done.rotated else []
    for label, names in (("new", added), ("rotated", done.rotated), ("dropped", done.dropped)):
        for name in names:
            print(f"  {label}: {name}")
    print(f"wrote {args.out}/passwd, dynsec.json, mosquitto.conf; passwords in {args.out}/secrets/ (0600)")
    if done.unshared:
        print(
            f"linli broker config: no group '{args.broker_group}' here, so {', '.join(done.unshared)} "
            "stay root's: Mosquitto run as root drops to its own user and cannot read them; pass "
            "--broker-group with the group it runs as, or chgrp them to it",
            file=sys.stderr,
        )
    if emqx is not None:
        print(f"wrote {args.out}/emqx/emqx.conf, acl.conf, users.csv")
    return 0


def _certs(args: argparse.Namespace) -> int:
    from linli.cloud.broker.certs import make_ca, make_leaf
    from linli.cloud.broker.files import broker_gid

    names = args.server_name or ["localhost", "127.0.0.1"]
    try:
        made = make_ca(args.out)
        make_leaf(args.out, "server", names[0], server_names=names, gid=broker_gid(args.broker_group))
        for client in args.client:
            make_leaf(args.out, client.replace("/", "-"), client)
    except (OSError, ValueError) as exc:
        print(f"linli broker certs: {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"CA {'made' if made else 'kept'}: {args.out}/ca.crt")
    print(f"server certificate for {', '.join(names)}: {args.out}/server.crt, server.key")
    for client in args.client:
        stem = client.replace("/", "-")
        print(f"client certificate {client}: {args.out}/{stem}.crt, {stem}.key")
    return 0
