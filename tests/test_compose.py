"""docker-compose.yml stays in step with the nats-server eskit embeds (no Docker needed: we parse it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from eskit.server import server_version

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def service() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return dict(spec["services"]["nats"])


def test_compose_image_has_the_same_minor_version_as_the_embedded_server() -> None:
    image = service()["image"]
    name, tag = image.split(":")
    major, minor = server_version().split(".")[:2]
    assert name == "nats"
    assert tag.split("-")[0] == f"{major}.{minor}", f"{image} vs embedded nats-server {server_version()}"


def test_compose_server_runs_jetstream_with_monitoring_a_volume_and_a_healthcheck() -> None:
    svc = service()
    command = svc["command"]
    assert "-js" in command
    assert command[command.index("-m") + 1] == "8222"
    assert "4222:4222" in svc["ports"] and "8222:8222" in svc["ports"]
    volume, mount = svc["volumes"][0].split(":")
    assert mount == command[command.index("-sd") + 1]
    assert volume in yaml.safe_load(COMPOSE.read_text())["volumes"]
    assert "healthz" in " ".join(svc["healthcheck"]["test"])
