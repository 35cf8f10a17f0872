"""docker-compose.yml stays in step with the nats-server eskit embeds (no Docker needed: we parse it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import eskit
from eskit.auth import least_privilege_config
from eskit.server import EmbeddedServer, server_version

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


def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def host_ports(svc: dict[str, Any]) -> list[str]:
    return [p.split(":")[0] for p in svc.get("ports", [])]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_cluster_profile_runs_three_routed_jetstream_nodes_of_the_same_image() -> None:
    services = spec()["services"]
    nodes = {name: svc for name, svc in services.items() if "cluster" in svc.get("profiles", [])}
    assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
    for name, svc in nodes.items():
        command = svc["command"]
        assert svc["image"] == service()["image"]
        assert "-js" in command and flag(command, "--cluster_name") == "eskit"
        routes = flag(command, "--routes").split(",")
        assert sorted(routes) == [f"nats-route://{n}:6222" for n in sorted(nodes)]
        assert flag(command, "--cluster").endswith(":6222")
        client_port = next(p.split(":")[0] for p in svc["ports"] if p.endswith(":4222"))
        assert flag(command, "--client_advertise") == f"localhost:{client_port}", (
            name
        )  # host clients reconnect
        volume, mount = svc["volumes"][0].split(":")
        assert mount == flag(command, "-sd") and volume in spec()["volumes"]
        assert "healthz" in " ".join(svc["healthcheck"]["test"])
    assert len({flag(s["command"], "--server_name") for s in nodes.values()}) == 3
    assert len({s["volumes"][0] for s in nodes.values()}) == 3, "each node needs its own volume"


def test_no_two_services_publish_the_same_host_port_and_the_default_service_has_no_profile() -> None:
    services = spec()["services"]
    ports = [p for svc in services.values() for p in host_ports(svc)]
    assert len(ports) == len(set(ports)), ports
    assert "profiles" not in services["nats"], "`docker compose up -d` must still start the workshop server"


def test_the_auth_profile_mounts_exactly_what_eskit_auth_generates_for_the_compose_passwords() -> None:
    passwords = spec()["x-workshop-passwords"]
    svc = spec()["services"]["nats-auth"]
    assert svc["profiles"] == ["auth"] and svc["image"] == service()["image"]
    source, target, _ = next(v for v in svc["volumes"] if v.startswith("./compose/")).split(":")
    assert flag(svc["command"], "-c") == target and "-js" in svc["command"]
    text = (COMPOSE.parent / source).read_text()
    assert text == least_privilege_config(
        writer_password=passwords["writer"], analyst_password=passwords["analyst"], admin_password=passwords["admin"]
    )


async def test_the_compose_auth_file_is_a_config_nats_server_accepts_with_all_three_users() -> None:
    passwords = spec()["x-workshop-passwords"]
    with EmbeddedServer(config=(COMPOSE.parent / "compose" / "auth.conf").read_text()) as server:
        async with await eskit.connect(server.url, user="admin", password=passwords["admin"]) as admin:
            await admin.event_store("compose")  # an admin creates stores
        async with await eskit.connect(server.url, user="writer", password=passwords["writer"]) as writer:
            store = await writer.event_store("compose")
            assert await store.append("1", [eskit.Event("created")]) == 1
        async with await eskit.connect(server.url, user="analyst", password=passwords["analyst"]) as analyst:
            store = await analyst.event_store("compose")
            assert len(await store.read("1")) == 1
            with pytest.raises(eskit.PermissionDeniedError):
                await store.append("1", [eskit.Event("shipped")])
        async with await eskit.connect(server.url, user="admin", password=passwords["admin"]) as admin:
            assert await admin.delete_store("compose")
