"""The Dockerfile (parsed with dockerfile-parse) and deploy/compose.yml."""

from __future__ import annotations

import yaml
from dockerfile_parse import DockerfileParser

from deploy_files import DEPLOY

ROOT = DEPLOY.parent


def _dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser


def test_the_image_is_multi_stage_non_root_with_a_health_check() -> None:
    parser = _dockerfile()
    stages = [i for i in parser.structure if i["instruction"] == "FROM"]
    assert len(stages) == 2 and stages[0]["value"].endswith("AS build")
    final = [i for i in parser.structure if i["startline"] > stages[1]["startline"]]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    assert any(i["instruction"] == "HEALTHCHECK" and "/healthz" in i["value"] for i in final)
    assert any(i["instruction"] == "COPY" and "--from=build" in i["value"] for i in final)
    assert parser.baseimage.startswith("python:3.11")
    exposed = " ".join(i["value"] for i in final if i["instruction"] == "EXPOSE").split()
    assert {"8000", "9101", "9102", "9103", "9104"} <= set(exposed)
    assert '"qv"' in next(i["value"] for i in final if i["instruction"] == "ENTRYPOINT")


def test_compose_runs_every_service_and_its_servers() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    services = compose["services"]
    assert {"api", "stream", "integrate", "worker", "scheduler"} <= set(services)
    assert {"postgres", "redis", "nats", "redpanda", "prometheus", "grafana"} <= set(services)
    assert services["scheduler"]["command"] == ["scheduler"]
    for name, port in (
        ("stream", 9101),
        ("integrate", 9102),
        ("worker", 9103),
        ("scheduler", 9104),
    ):
        assert services[name]["environment"]["QV_HEALTH_PORT"] == str(port)
        assert services[name]["environment"]["QV_STORAGE__BACKEND"] == "postgres"
    mounted = {v.split(":")[0] for v in services["prometheus"]["volumes"]}
    for path in mounted - {"promdata"}:
        assert (DEPLOY / path).resolve().exists(), path


def test_prometheus_scrapes_the_compose_services_on_their_ports() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    }
    assert targets == {"api:8000", "stream:9101", "integrate:9102", "worker:9103", "scheduler:9104"}
