"""Node-RED as a peer in the MQTT ingest benchmark: the batched best-practice flow.

mqtt in (one node per topic filter, parsed JSON) -> function (topic and payload to a point)
-> join (5,000 points or 1 s) -> influxdb batch (1.x protocol, ms precision), writing to
the same VictoriaMetrics the agent writes to, so that the same count of points decides.

Node-RED and node-red-contrib-influxdb are pinned in nodered/package-lock.json and installed
with `npm ci` into nodered/node_modules. It runs headless: no editor, no HTTP nodes, telemetry
and diagnostics off, listening on loopback only.

    .venv/bin/python benchmarks/peers/nodered.py --install     # install it now (needs npm)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent / "nodered"
RED = HERE / "node_modules" / "node-red" / "red.js"

# topic's first level -> measurement, as the agent's profiles name them
MEASUREMENTS = {"trucks": "truck", "elevators": "camera", "rescue": "rescue_point"}

FUNCTION = """
const t = msg.topic.split("/");
const p = msg.payload;
const tags = { site: t[1], device: t[2] };
const fields = {};
for (const [k, v] of Object.entries(p)) {
  if (k === "ts") continue;
  if (k === "waste_type" || k === "route" || k === "object") tags[k] = v;
  else fields[k] = v;
}
msg.payload = { measurement: MEASUREMENTS[t[0]], tags: tags, fields: fields, timestamp: new Date(p.ts) };
return msg;
"""


def missing() -> str | None:
    """Why Node-RED cannot run here, or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "npm is not installed (apt-get install -y npm)"
    return None


def install(progress: Callable[[str], None] = print) -> None:
    """`npm ci` the pinned versions, unless they are installed already."""
    if RED.exists():
        return
    progress(f"node-red: installing the pinned versions into {HERE / 'node_modules'} (npm ci)")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        check=True,
        env={**_env(), "NODE_RED_DISABLE_TELEMETRY": "1"},
    )


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("npm_")}


def flow(  # noqa: PLR0917
    port: int, ca: Path | None, store_port: int, client_id: str, filters: list[str], qos: int
) -> list[dict]:  # type: ignore[type-arg]
    """The flow's nodes (no id equals a type: Node-RED would take the node for a config node)."""
    broker: dict[str, object] = {
        "id": "n-broker",
        "type": "mqtt-broker",
        "broker": "127.0.0.1",
        "port": str(port),
        "clientid": client_id,
        "autoConnect": True,
        "usetls": ca is not None,
        "protocolVersion": "4",
        "keepalive": "60",
        "cleansession": True,
    }
    nodes: list[dict] = [broker]  # type: ignore[type-arg]
    if ca is not None:
        broker["tls"] = "n-tls"
        nodes.append(
            {
                "id": "n-tls",
                "type": "tls-config",
                "ca": str(ca),
                "cert": "",
                "key": "",
                "servername": "",
                "verifyservercert": True,
            }
        )
    for k, f in enumerate(filters):
        nodes.append(
            {
                "id": f"in{k}",
                "type": "mqtt in",
                "z": "n-tab",
                "topic": f,
                "qos": str(qos),
                "datatype": "json",
                "broker": "n-broker",
                "nl": False,
                "rap": True,
                "rh": 0,
                "inputs": 0,
                "wires": [["n-point"]],
            }
        )
    script = f"const MEASUREMENTS = {json.dumps(MEASUREMENTS)};\n{FUNCTION}"
    nodes += [
        {"id": "n-tab", "type": "tab", "label": "ingest"},
        {
            "id": "n-point",
            "type": "function",
            "z": "n-tab",
            "func": script,
            "outputs": 1,
            "wires": [["n-join"]],
        },
        {
            "id": "n-join",
            "type": "join",
            "z": "n-tab",
            "mode": "custom",
            "build": "array",
            "property": "payload",
            "propertyType": "msg",
            "count": "5000",
            "timeout": "1",
            "accumulate": False,
            "wires": [["n-write"]],
        },
        {
            "id": "n-write",
            "type": "influxdb batch",
            "z": "n-tab",
            "influxdb": "n-store",
            "precision": "ms",
            "wires": [],
        },
        {
            "id": "n-store",
            "type": "influxdb",
            "hostname": "127.0.0.1",
            "port": str(store_port),
            "protocol": "http",
            "database": "linli",
            "influxdbVersion": "1.x",
        },
    ]
    return nodes


SETTINGS = """module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %d,
    httpAdminRoot: false,
    httpNodeRoot: false,
    flowFile: "flows.json",
    credentialSecret: false,
    telemetry: { enabled: false },
    diagnostics: { enabled: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    logging: { console: { level: "warn", metrics: false, audit: false } },
};
"""


def start(  # noqa: PLR0917
    work: Path, port: int, ca: Path | None, store_url: str, client_id: str, filters: list[str], qos: int
) -> subprocess.Popen[bytes]:
    """Node-RED running the flow in `work`, taking `filters` from the broker on `port`."""
    from linli.demo.servers import free_port

    work.mkdir(parents=True, exist_ok=True)
    store_port = int(store_url.rsplit(":", 1)[1].rstrip("/"))
    (work / "flows.json").write_text(
        json.dumps(flow(port, ca, store_port, client_id, filters, qos), indent=1)
    )
    (work / "settings.js").write_text(SETTINGS % free_port())
    log = (work / "node-red.log").open("wb")
    return subprocess.Popen(
        ["node", str(RED), "--settings", str(work / "settings.js"), "--userDir", str(work)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**_env(), "NODE_RED_DISABLE_TELEMETRY": "1"},
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--install", action="store_true", help="install the pinned Node-RED now")
    args = parser.parse_args()
    if args.install:
        why = missing()
        if why:
            print(f"node-red: cannot install: {why}", file=sys.stderr)
            return 2
        install()
        print(f"node-red: installed: {RED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
