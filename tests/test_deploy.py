"""The deployment files: Kubernetes manifests valid against the API schema (offline), every
container running a real tutorloop command with real options, every setting they give valid,
every Secret and ConfigMap they reference shipped; the compose file the same way."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO, run_cli
from tutorloop.infra.settings import load_settings

K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
KUBERNETES = "1.30.0"


def _documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if doc["kind"] in ("Deployment", "Job"):
        return [spec["template"]["spec"]]
    return []


def _containers() -> list[dict[str, Any]]:
    return [c for doc in _documents() for pod in _pod_specs(doc) for c in pod["containers"]]


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    shipped = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == shipped


@pytest.mark.parametrize("doc", _documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_each_manifest_is_valid_against_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def _check_command(args: list[str]) -> None:
    """``tutorloop ARGS`` names a real command, and every ``--option`` it passes exists."""
    words = [a for a in args if not a.startswith("-")]
    command: list[str] = []
    for word in words:  # the command path: the leading words that are subcommands
        probe = run_cli(*command, word, "--help")
        if probe.returncode != 0:
            break
        command.append(word)
    assert command, args
    help_text = run_cli(*command, "--help").stdout
    for option in (a for a in args if a.startswith("--")):
        assert option in help_text, (command, option)


def test_each_container_runs_a_real_command() -> None:
    containers = _containers()
    assert {c["args"][0] for c in containers} >= {"streams", "serve", "trainer", "registry"}
    for container in containers:
        _check_command(container["args"])


def test_the_config_map_is_a_valid_configuration(tmp_path: Path) -> None:
    [config] = [d for d in _documents() if d["kind"] == "ConfigMap"]
    path = tmp_path / "tutorloop.toml"
    path.write_text(config["data"]["tutorloop.toml"])
    settings = load_settings(path, data_dir=tmp_path)
    assert settings.warehouse.url and settings.warehouse.url.startswith("postgresql://")
    assert settings.registry.artifact_store.startswith("s3://")
    assert not settings.broker.embedded


def test_every_referenced_secret_and_config_map_is_shipped() -> None:
    docs = _documents()
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        for pod in _pod_specs(doc):
            for volume in pod.get("volumes", []):
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in secrets
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in maps
            for container in pod["containers"]:
                for source in container.get("envFrom", []):
                    assert source["secretRef"]["name"] in secrets
    # The password env var the config names is one a Secret provides.
    [config] = [d for d in docs if d["kind"] == "ConfigMap"]
    env_name = re.search(r'password_env = "(\w+)"', config["data"]["tutorloop.toml"])
    assert env_name is not None
    provided = {k for d in docs if d["kind"] == "Secret" for k in d.get("stringData", {})}
    assert env_name.group(1) in provided


def test_the_compose_trial_runs_real_commands_with_valid_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    ours = {name: svc for name, svc in compose["services"].items()
            if svc.get("image") == "tutorloop:local"}  # fmt: skip
    assert {"migrate", "worker", "serving", "trainer"} <= set(ours)
    for service in ours.values():
        command = service["command"]
        _check_command(command if isinstance(command, list) else shlex.split(command))
        env = {k: str(v) for k, v in service["environment"].items()}
        with monkeypatch.context() as patch:
            for key, value in env.items():
                if key.startswith("TUTORLOOP_"):
                    patch.setenv(key, value)
            settings = load_settings(data_dir=tmp_path)
        assert settings.warehouse.url is not None
        assert settings.warehouse.password_env in env  # the password is provided
        assert settings.registry.artifact_store.startswith("s3://")
