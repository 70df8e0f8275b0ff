"""TLS to the MQTT broker, for every linli client: the CA to trust, and optionally a client certificate."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Self

import paho.mqtt.client as paho
from pydantic import BaseModel, ConfigDict, model_validator


class MqttTls(BaseModel):
    """`[mqtt.tls]`, `[alerts.tls]`, `[broker.tls]`: files from `linli broker certs`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca: Path  # the CA that signed the broker's certificate
    cert: Path | None = None  # this client's certificate, when the broker asks for one
    key: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both cert and key, or neither")
        return self


def anchored(tls: MqttTls | None, folder: Path) -> MqttTls | None:
    """Relative file names taken from `folder` (the config file's), as every other path is."""
    if tls is None:
        return None
    return tls.model_copy(
        update={
            k: folder / p for k in ("ca", "cert", "key") if (p := getattr(tls, k)) and not p.is_absolute()
        }
    )


def tls_problems(tls: MqttTls | None, key: str) -> list[str]:
    """Each file the TLS table names that is not there, by its key."""
    if tls is None:
        return []
    return [
        f"{key}.{name}: no file {path} (make the CA and certificates with `linli broker certs`)"
        for name, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key))
        if path is not None and not path.is_file()
    ]


def apply_tls(client: paho.Client, tls: MqttTls | None) -> None:
    """Make `client` connect with TLS 1.2 or later, checking the broker's name against its certificate.

    Raises ValueError naming the file that is missing or unreadable.
    """
    if tls is None:
        return
    for name, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
        if path is not None and not path.is_file():
            raise ValueError(f"TLS {name} file {path} does not exist (see `linli broker certs`)")
    try:
        context = ssl.create_default_context(cafile=str(tls.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert is not None and tls.key is not None:
            context.load_cert_chain(str(tls.cert), str(tls.key))
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"TLS files {tls.ca}, {tls.cert}, {tls.key}: {exc}") from exc
    client.tls_set_context(context)
