"""The documentation's examples are what linli accepts and prints today.

docs/configuration.md marks its code blocks: `toml edge` is a whole agent config, each
`toml edge-fragment` is added to the config before it, `toml edge-broken` is a config with a
mistake, and the `text config-error` after it is exactly what `linli edge check` says of it;
`toml notifier` is a part of a notifier's config. docs/waste.md's `toml waste` is a waste
service's.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from linli.cloud.broker.certs import make_ca, make_leaf

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(\w+)(?: ([\w-]+))?\n(.*?)^```", re.S | re.M)


def blocks(doc: str) -> list[tuple[str, str]]:
    """(tag, body) of every tagged code block in a doc under docs/."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return [(tag, body) for _lang, tag, body in BLOCK.findall(text) if tag]


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linli.cli", "edge", "check", "--config", path.name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=path.parent,
    )


@pytest.mark.servers
def test_every_config_example_is_accepted(tmp_path: Path) -> None:
    configs: list[str] = []
    for tag, body in blocks("configuration.md"):
        if tag == "edge":
            configs.append(body)
        elif tag == "edge-fragment":
            assert configs, "a fragment before any whole config"
            configs.append(configs[-1] + "\n" + body)
    assert len(configs) >= 3
    # The files the TLS example names, where it says (its config's folder).
    make_ca(tmp_path / "certs")
    make_leaf(tmp_path / "certs", "edge-ronghua", "edge/ronghua-edge")
    for i, text in enumerate(configs):
        path = tmp_path / f"example-{i}.toml"
        path.write_text(text, encoding="utf-8")
        result = check(path)
        assert result.returncode == 0, f"example {i}:\n{text}\n{result.stderr}"


def test_every_notifier_example_is_accepted() -> None:
    from linli.cloud.notifier.config import NotifierConfig

    examples = [body for tag, body in blocks("configuration.md") if tag == "notifier"]
    assert examples
    for body in examples:
        NotifierConfig.model_validate(tomllib.loads(body))


def test_every_waste_example_is_accepted() -> None:
    from linli.cloud.waste.config import WasteConfig

    examples = [body for tag, body in blocks("waste.md") if tag == "waste"]
    assert examples
    for body in examples:
        assert WasteConfig.model_validate(tomllib.loads(body)).routes == "every"


@pytest.mark.servers
def test_the_documented_config_error_is_the_real_one(tmp_path: Path) -> None:
    tagged = dict(blocks("configuration.md"))
    path = tmp_path / "edge.toml"
    path.write_text(tagged["edge-broken"], encoding="utf-8")
    result = check(path)
    assert result.returncode == 2
    assert result.stderr == tagged["config-error"]


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))])
def test_links_to_files_resolve(doc: str) -> None:
    path = ROOT / doc if doc == "README.md" else ROOT / "docs" / doc
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
        assert (path.parent / target).exists(), f"{doc} links to {target}, which is not there"


def test_the_shipped_configs_load() -> None:
    """What docker-compose and the README run: the notifier's two examples, the district's edge."""
    from linli.cloud.notifier.config import load_notifier_config
    from linli.cloud.waste.config import load_waste_config
    from linli.edge.config import load_config
    from linli.transit.gtfs import load_feed

    for name in ("notifier.toml", "notifier.local.toml"):
        assert load_notifier_config(ROOT / "deploy" / name).subscriptions
    assert len(load_config(ROOT / "deploy" / "district.toml").devices()) > 100
    waste = load_waste_config(ROOT / "deploy" / "waste.local.toml")
    assert load_feed(waste.gtfs).trips
    compose = load_waste_config(ROOT / "deploy" / "waste.toml")  # its paths are the container's
    assert (compose.broker.host, str(compose.gtfs)) == ("broker", "/etc/linli/gtfs/hongqiao")
