"""The deployment files are well-formed and say what docs/deployment.md says.

No container engine here: syntax and content only (docker compose and docker
build are run where the images are built)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
DOCKERFILE_KEYWORDS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)  # continuation lines
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        out.append((keyword, rest.strip()))
    return out


def test_dockerfile_is_slim_non_root_and_serves() -> None:
    ins = dockerfile_instructions()
    assert all(k in DOCKERFILE_KEYWORDS for k, _ in ins), [k for k, _ in ins]
    froms = [rest for k, rest in ins if k == "FROM"]
    assert froms and all("-slim" in f for f in froms)
    users = [rest for k, rest in ins if k == "USER"]
    assert users and users[-1] not in ("0", "root")
    # The last USER comes after the last RUN: nothing runs as root at run time.
    last_user = max(i for i, (k, _) in enumerate(ins) if k == "USER")
    assert last_user > max(i for i, (k, _) in enumerate(ins) if k == "RUN")
    assert ("ENTRYPOINT", '["fastagent"]') in ins and ("CMD", '["serve"]') in ins
    assert ("EXPOSE", "8080") in ins
    for k, rest in ins:
        if k == "COPY" and not rest.startswith("--from"):
            for src in shlex.split(rest)[:-1]:
                assert (ROOT / src).exists(), src


def test_the_image_carries_the_inspector_assets() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = meta["tool"]["setuptools"]["package-data"]["fastagent"]
    assert "inspector/static/*" in data
    assert (ROOT / "fastagent" / "inspector" / "static" / "index.html").exists()


def test_compose_two_instances_on_postgres_behind_a_proxy() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"db", "fastagent-a", "fastagent-b", "proxy"} <= set(services)
    assert services["db"]["image"].startswith("postgres:")
    a, b = services["fastagent-a"], services["fastagent-b"]
    store = a["environment"]["FASTAGENT_STORE"]
    assert store.startswith("postgresql://") and "@db:" in store
    assert b["environment"]["FASTAGENT_STORE"] == store  # one shared log: calls can move
    # One master key for both: a call sealed on one instance opens on the other.
    assert a["environment"]["FASTAGENT_MASTER_KEY"] == b["environment"]["FASTAGENT_MASTER_KEY"]
    assert "FASTAGENT_MASTER_KEY" in a["environment"]["FASTAGENT_MASTER_KEY"]
    for inst in (a, b):
        assert "readyz" in " ".join(inst["healthcheck"]["test"])
        drain = float(inst["environment"]["FASTAGENT_DRAIN_S"])
        assert float(inst["stop_grace_period"].rstrip("s")) > drain
        assert inst["depends_on"]["db"]["condition"] == "service_healthy"
    caddy = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "/audiocodes" in caddy and "health_uri /readyz" in caddy
    assert "fastagent-a:8080" in caddy and "fastagent-b:8080" in caddy
    mount = services["proxy"]["volumes"][0].split(":")[0]
    assert (ROOT / mount).exists()
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [
        "fastagent-a:8080",
        "fastagent-b:8080",
    ]
