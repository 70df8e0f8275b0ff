"""The project's own files: generated docs are current, the compose file is valid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from linli.catalog.docs import profile_markdown
from linli.catalog.profile import builtin_profiles
from linli.cloud.waste.config import load_waste_config

ROOT = Path(__file__).resolve().parents[2]


def test_register_docs_are_current() -> None:
    for kind, profile in builtin_profiles().items():
        committed = (ROOT / "docs" / "registers" / f"{kind}.md").read_text(encoding="utf-8")
        assert committed == profile_markdown(profile), (
            f"docs/registers/{kind}.md is stale: run `linli catalog doc --out docs/registers`"
        )


@pytest.mark.servers
def test_compose_file_is_valid() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: apt-get install -y docker-compose", pytrace=False)
    result = subprocess.run(
        [binary, "--env-file", ".env.example", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.servers
def test_every_service_and_the_image_keep_shanghai_time_and_draw_chinese() -> None:
    """TZ in compose and the image, with the zone files and the CJK font installed beside it:
    whatever reads a local clock (logs, a library's default) reads Shanghai's."""
    services = compose_services("docker-compose.yml")
    zones = {name: (service.get("environment") or {}).get("TZ") for name, service in services.items()}
    assert set(zones.values()) == {"Asia/Shanghai"}, zones
    image = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    assert "ENV TZ=Asia/Shanghai" in image
    installed = " ".join(line for line in image if "apt-get install" in line or line.startswith("    "))
    assert {"tzdata", "fonts-noto-cjk"} <= set(installed.split()), installed
    setup = (ROOT / "scripts" / "setup").read_text(encoding="utf-8")
    assert "fonts-noto-cjk" in setup.split("APT_PACKAGES=(", 1)[1].split(")", 1)[0]


def city_services() -> dict[str, Any]:
    """The full stack with the city override, as `docker-compose config` resolves it."""
    return compose_services("docker-compose.yml", "deploy/compose.city.yml")


def compose_services(*files: str) -> dict[str, Any]:
    """The services of the compose files, as `docker-compose config` resolves them."""
    import yaml

    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: apt-get install -y docker-compose", pytrace=False)
    chosen = [arg for f in files for arg in ("-f", f)]
    result = subprocess.run(
        [binary, "--env-file", ".env.example", *chosen, "config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


@pytest.mark.servers
def test_the_city_override_moves_every_notifier_to_one_shared_state() -> None:
    """Two notifiers in one broker group must share one state, or each step is told twice."""
    services = city_services()
    notifiers = {name: s for name, s in services.items() if s.get("command", [])[:2] == ["cloud", "run"]}
    assert set(notifiers) == {"cloud", "cloud-b"}
    states = {s["environment"]["LINLI_STATE_URL"] for s in notifiers.values()}
    assert states == {"postgresql://linli@postgres:5432/linli"}
    configs = {v for s in notifiers.values() for v in s["volumes"] if str(v).endswith("notifier.toml:ro")}
    assert len(configs) == 1  # one config, so one broker group
    for s in notifiers.values():
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert s["environment"]["PGPASSWORD"] == "change-me-postgres"
    # The notifier reads the variable: the config's state is replaced by the shared database.
    from linli.cloud.notifier.config import load_notifier_config

    env = {**os.environ, "LINLI_STATE_URL": "postgresql://linli@postgres:5432/linli"}
    loaded = subprocess.run(
        [sys.executable, "-c",
         "from pathlib import Path; from linli.cloud.notifier.config import load_notifier_config as l; "
         "print(l(Path('deploy/notifier.toml')).state)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert loaded.stdout.strip() == "postgresql://linli@postgres:5432/linli"
    assert load_notifier_config(ROOT / "deploy" / "notifier.toml").state == "/var/lib/linli/notifier.sqlite"
    # The waste services too: one state for both, so each keeper notice is claimed once.
    wastes = {name: s for name, s in services.items() if s.get("command", [])[:2] == ["waste", "run"]}
    assert set(wastes) == {"waste", "waste-b"}
    assert {s["environment"]["LINLI_STATE_URL"] for s in wastes.values()} == states
    assert len({v for s in wastes.values() for v in s["volumes"] if str(v).endswith("waste.toml:ro")}) == 1
    # But an MQTT session each: one client id for both, the broker would throw each out in turn.
    config = load_waste_config(ROOT / "deploy" / "waste.toml")
    ids = set()
    for service in wastes.values():
        name = service["environment"].get("LINLI_WASTE_NAME")
        with pytest.MonkeyPatch.context() as patch:
            if name is None:
                patch.delenv("LINLI_WASTE_NAME", raising=False)
            else:
                patch.setenv("LINLI_WASTE_NAME", name)
            ids.add(config.client_id())
    assert ids == {"linli-waste-waste", "linli-waste-waste-b"}


@pytest.mark.servers
def test_the_city_override_makes_the_broker_a_three_node_emqx_cluster(tmp_path: Path) -> None:
    services = city_services()
    nodes = {name: s for name, s in services.items() if s.get("image", "").startswith("emqx/emqx:")}
    assert set(nodes) == {"broker", "broker-2", "broker-3"}
    # The last Apache-2.0 line with clustering.
    assert {s["image"].split(":")[1].rsplit(".", 1)[0] for s in nodes.values()} == {"5.8"}
    names = {s["environment"]["EMQX_NODE__NAME"] for s in nodes.values()}
    assert len(names) == 3
    seeds = {s["environment"]["EMQX_CLUSTER__STATIC__SEEDS"] for s in nodes.values()}
    assert seeds == {"[" + ",".join(sorted(names)) + "]"}
    assert len({s["environment"]["EMQX_NODE__COOKIE"] for s in nodes.values()}) == 1
    for name, node in nodes.items():
        host = node["environment"]["EMQX_NODE__NAME"].split("@")[1]
        aliases = set(node["networks"]["default"]["aliases"])
        assert host in aliases, name  # each node reaches the others by its name
        # Every client connects to `broker`: each node answers to it.
        assert name == "broker" or "broker" in aliases, name
        assert "emqx-etc:/opt/emqx/etc/linli:ro" in node["volumes"], name
        assert node["depends_on"]["broker-config"]["condition"] == "service_completed_successfully"
    tables = {"district.toml": "mqtt", "notifier.toml": "broker", "waste.toml": "broker"}
    hosts = {tomllib.loads((ROOT / "deploy" / f).read_text())[t]["host"] for f, t in tables.items()}
    assert hosts == {"broker"}
    # broker-config's own command, run here with the deploy folder for /etc/linli: EMQX's
    # files name the folder the nodes mount.
    command = services["broker-config"]["command"][0].replace("/etc/linli/", f"{ROOT}/deploy/")
    # waste.toml names its timetable by the container's path; the local one by this folder's.
    command = command.replace("deploy/waste.toml", "deploy/waste.local.toml")
    for part in command.replace("/broker/", f"{tmp_path}/").replace("/broker ", f"{tmp_path} ").split(" && "):
        if part.startswith("linli broker"):
            made = subprocess.run(
                [sys.executable, "-m", "linli.cli", *part.split()[1:]],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr
    conf = (tmp_path / "emqx" / "emqx.conf").read_text()
    assert 'bootstrap_file = "/opt/emqx/etc/linli/users.csv"' in conf
    assert 'path = "/opt/emqx/etc/linli/acl.conf"' in conf
    assert "cp /opt/emqx/etc/linli/emqx.conf /opt/emqx/etc/emqx.conf" in " ".join(nodes["broker"]["command"])


@pytest.mark.servers
def test_compose_edge_config_is_valid() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "linli.cli.main",
            "edge",
            "check",
            "--config",
            str(ROOT / "deploy" / "district.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "135 devices" in result.stdout
    assert result.stdout.count("input@100+99") == 50
    # The agent subscribes to its own sites only, so that others can share the broker.
    assert "elevators/hongxu-tower/# (QoS 1)" in result.stdout
    assert "trucks/fleet/# (QoS 1)" in result.stdout
    assert "elevators/# " not in result.stdout


def test_grafana_is_provisioned_with_the_dashboards_data_source_and_folder() -> None:
    from linli.dashboards.grafana import DATASOURCE_NAME, FOLDER_UID
    from linli.dashboards.influxql import DATASOURCE

    provisioning = ROOT / "dashboards" / "provisioning"
    source = (provisioning / "datasources" / "linli.yaml").read_text(encoding="utf-8")
    assert f"uid: {DATASOURCE.uid}\n" in source  # what every panel names
    assert f"name: {DATASOURCE_NAME}\n" in source
    # The read-only token the influx-tokens service made, from its file: never committed.
    assert "httpHeaderValue1: Token $__file{/tokens/grafana/token}" in source
    provider = (provisioning / "dashboards" / "linli.yaml").read_text(encoding="utf-8")
    assert f"folderUid: {FOLDER_UID}\n" in provider
    path = provider.split("path: ")[1].strip()
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    # The generated JSON is mounted where the provider reads, and the screen is Grafana's home.
    assert f"./dashboards/json:{path}:ro" in compose
    assert f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: {path}/linli-screen.json" in compose
    assert (ROOT / "dashboards" / "json" / "linli-screen.json").exists()
    assert "grafana-token:/tokens/grafana:ro" in compose


@pytest.mark.servers
def test_compose_gives_every_service_its_own_identity_and_token(tmp_path: Path) -> None:
    """No shared broker credential, no admin InfluxDB token outside InfluxDB and its token maker."""
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert "${MQTT_PASSWORD}" not in compose
    assert "MQTT_PASSWORD" not in (ROOT / ".env.example").read_text(encoding="utf-8")
    assert compose.count("${INFLUXDB_TOKEN}") == 2  # influxdb's setup and influx-tokens
    for service, secrets in {
        "edge": "/broker/secrets/edge-hongqiao-edge.env /tokens/edge/influx.env",
        "cloud": "/broker/secrets/notifier.env",
        "waste": "/broker/secrets/waste.env /tokens/waste/influx.env",
    }.items():
        block = compose.split(f"\n  {service}:\n")[1].split("\n\n")[0]
        assert f"SECRETS: {secrets}" in block, service
    # The identities those files name are the ones linli broker config makes from these configs.
    made = subprocess.run(
        [sys.executable, "-m", "linli.cli", "broker", "config",
         "--edge-config", str(ROOT / "deploy" / "district.toml"),
         "--notifier-config", str(ROOT / "deploy" / "notifier.toml"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    vault = tmp_path / "secrets"
    assert (vault / "edge-hongqiao-edge.env").exists()
    assert (vault / "notifier.env").exists()


def test_the_alert_event_schema_in_docs_is_current() -> None:
    from linli.cli.catalog import alert_schema_text

    committed = (ROOT / "docs" / "alert-event.schema.json").read_text(encoding="utf-8")
    assert committed == alert_schema_text(), (
        "regenerate: linli catalog alert-schema --out docs/alert-event.schema.json"
    )


def test_the_image_copies_the_source_tree_the_install_needs() -> None:
    """`pip install .` in the Dockerfile needs the folder pyproject finds the packages in."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    roots = set(pyproject["tool"]["setuptools"]["packages"]["find"]["where"])
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert roots == {"src"}
    assert roots <= copied, f"the image lacks {sorted(roots - copied)}"


BENCHMARKS = sorted(
    p
    for p in [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "benchmarks" / "peers").glob("*.py")]
    if p.stem not in {"cpucap", "harness", "mqttload"}
)


@pytest.mark.servers
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_every_benchmark_says_how_to_run_it(script: Path) -> None:
    """Each imports what it needs (the shared harness too) and answers --help."""
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script.name}")


def test_every_file_backed_model_has_the_one_strict_base() -> None:
    from linli.catalog.mqttspec import MqttSpec
    from linli.catalog.scenario import Scenario
    from linli.catalog.strict import Strict
    from linli.cloud.notifier.config import NotifierConfig
    from linli.cloud.waste.config import WasteConfig
    from linli.edge.config import EdgeConfig
    from linli.transit.extras import Extras

    for model in (MqttSpec, EdgeConfig, Scenario, NotifierConfig, WasteConfig, Extras):
        assert issubclass(model, Strict), model
    defined = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src").rglob("*.py")
        if any(line.startswith(("class Strict(", "class _Strict(")) for line in path.read_text().splitlines())
    ]
    assert defined == ["src/linli/catalog/strict.py"]


# Issue 33: a module over about 500 lines holds more than one thing; past this it is refused.
MAX_MODULE_LINES = 530


def test_no_module_is_over_530_lines() -> None:
    """Split a module by what it holds before it grows past MAX_MODULE_LINES."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted((ROOT / "src" / "linli").rglob("*.py"))
    }
    over = {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not over, ", ".join(
        f"{path} has {lines} lines (at most {MAX_MODULE_LINES})" for path, lines in over.items()
    )
