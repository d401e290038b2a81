"""The deployment files: docker-compose.yml, deploy/Dockerfile and deploy/k8s.

No Docker engine or cluster runs here, so the files are parsed and checked for the
properties that matter (scalable workers, real CLI commands, known settings, labels
that match). ``docker compose config`` runs too when a Compose v2 client is installed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from durable_graph.store import codec
from durable_graph.worker import config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
README = ROOT / "deploy" / "README.md"

SUBCOMMANDS = {"worker", "scheduler"}
KNOWN_ENV = {getattr(config, name) for name in dir(config) if name.startswith("ENV_")} | {
    codec.ENV_KEY,
    codec.ENV_KEYS,
    codec.ENV_KEY_ID,
}
ENV_NAME = re.compile(r"DURABLE_GRAPH_[A-Z0-9_]+")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolate(text: str) -> str:
    """Compose interpolation with an empty environment: defaults, and "x" for required."""

    def value(match: re.Match[str]) -> str:
        operator, rest = match.group(2), match.group(3)
        if operator and operator.endswith("-"):
            return rest
        return "x"

    return INTERPOLATION.sub(value, text)


def _check_cli_args(args: list[str]) -> None:
    """``args`` (after ``durable-graph``) must start a worker or scheduler the CLI accepts."""
    assert args, "no subcommand given to durable-graph"
    assert args[0] in SUBCOMMANDS, f"{args[0]!r} is not one of {sorted(SUBCOMMANDS)}"
    try:
        from durable_graph.cli import build_parser
    except ImportError:
        return  # the CLI is not built yet: the subcommand check above is all there is
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"durable-graph rejects {shlex.join(args)!r} (exit {exc.code})")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def k8s_docs() -> dict[str, list[dict[str, Any]]]:
    """Every YAML document under deploy/k8s, by file name."""
    docs = {
        path.name: [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        for path in sorted(K8S.glob("*.yaml"))
    }
    assert docs, "no manifests in deploy/k8s"
    return docs


def _k8s_kind(docs: dict[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [d for ds in docs.values() for d in ds if d.get("kind") == kind]


def _deployment(docs: dict[str, list[dict[str, Any]]], component: str) -> dict[str, Any]:
    found = [
        d
        for d in _k8s_kind(docs, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {component} Deployment, found {len(found)}"
    return found[0]


# --- every file -----------------------------------------------------------------------------


def test_every_durable_graph_variable_is_one_the_code_reads() -> None:
    files = [COMPOSE, DOCKERFILE, README, *sorted(K8S.glob("*.yaml"))]
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in ENV_NAME.findall(path.read_text())
        if name not in KNOWN_ENV
    }
    assert not unknown, f"settings durable-graph does not read: {sorted(unknown)}"


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_redis_persists_with_aof_on_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    command = redis["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    assert "--appendonly" in words
    assert str(words[words.index("--appendonly") + 1]) == "yes"
    volumes = [str(v).split(":") for v in redis["volumes"]]
    assert any(v[0] in compose["volumes"] and v[1] == "/data" for v in volumes), volumes
    assert "redis-cli" in redis["healthcheck"]["test"]
    assert "ping" in redis["healthcheck"]["test"]


def test_compose_workers_scale(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    # A fixed name or host port makes `docker compose up --scale worker=N` fail for N > 1.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["restart"] in {"always", "unless-stopped", "on-failure"}


def test_compose_builds_the_image_from_deploy_dockerfile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    build = services["worker"]["build"]
    context = ROOT / build["context"]
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    # The scheduler runs the worker's image rather than building a second copy.
    assert services["scheduler"]["image"] == services["worker"]["image"]
    assert "container_name" not in services["scheduler"]


@pytest.mark.parametrize("service", ["worker", "scheduler"])
def test_compose_commands_are_real_subcommands(compose: dict[str, Any], service: str) -> None:
    command = compose["services"][service]["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    words = [_interpolate(str(w)) for w in words]
    assert words[0] == "durable-graph"
    assert words[1] == service
    _check_cli_args(words[1:])


@pytest.mark.parametrize("service", ["worker", "scheduler"])
def test_compose_settings(compose: dict[str, Any], service: str) -> None:
    env = compose["services"][service]["environment"]
    assert set(env) <= KNOWN_ENV, set(env) - KNOWN_ENV
    assert env[config.ENV_REDIS_URL].startswith("redis://redis:")
    # No default: a key written in this file would be known to everyone.
    assert re.fullmatch(rf"\$\{{{codec.ENV_KEY}:\?[^}}]+\}}", env[codec.ENV_KEY])
    for name, value in env.items():
        for used, _, _ in INTERPOLATION.findall(str(value)):
            assert not used.startswith("DURABLE_GRAPH_") or used == name, (name, value)


def test_compose_flower(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert re.fullmatch(r"mher/flower:2\.\d+(\.\d+)?", flower["image"])
    assert any(_interpolate(str(p)).endswith(":5555") for p in flower["ports"])
    command = " ".join(flower["command"]) if isinstance(flower["command"], list) else ""
    broker = flower.get("environment", {}).get("CELERY_BROKER_URL", command)
    assert "redis://redis:6379" in broker


def _compose_v2() -> list[str] | None:
    """The command of a Compose v2 client, or None (v1 lacks the spec's `name`)."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run(
                [*command, "version", "--short"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = done.stdout.strip().lstrip("v")
        if done.returncode == 0 and version[:1].isdigit() and int(version.split(".")[0]) >= 2:
            return command
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = _compose_v2()
    if command is None:
        pytest.skip("no Docker Compose v2 client (`docker compose version` fails)")
    env = {**os.environ, codec.ENV_KEY: "test-secret"}
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    env.pop(codec.ENV_KEY)
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert codec.ENV_KEY in done.stderr


# --- deploy/Dockerfile ----------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if stripped.endswith("\\"):
            continue
        word, _, rest = pending.strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def test_dockerfile_base_user_and_install() -> None:
    instructions = _dockerfile_instructions()
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    base = next(rest for word, rest in instructions if word == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)].strip('"'), base)
    assert base.split()[0] == "python:3.11-slim"

    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    # A numeric uid lets Kubernetes' runAsNonRoot check it.
    assert users[-1].split(":")[0].isdigit()

    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs)
    assert any(w == "ENV" and "PYTHONPATH=/app" in rest for w, rest in instructions)

    cmd = [rest for word, rest in instructions if word in {"CMD", "ENTRYPOINT"}]
    assert json.loads(cmd[-1]) == ["durable-graph", "worker"]
    _check_cli_args(json.loads(cmd[-1])[1:])


def test_dockerfile_copies_existing_files_the_dockerignore_keeps() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        src
        for word, rest in _dockerfile_instructions()
        if word == "COPY" and "--from" not in rest
        for src in rest.split()[:-1]
        if not src.startswith("--")
    ]
    assert {"pyproject.toml", "README.md", "durable_graph"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src
        parts = Path(src).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in patterns:
            assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes), (src, pattern)


# --- deploy/k8s -----------------------------------------------------------------------------


def test_k8s_documents_have_the_basic_shape(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in k8s_docs.items():
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), name
            if doc["kind"] == "Kustomization":
                continue
            assert doc["metadata"]["name"], name
            assert "namespace" not in doc["metadata"], f"{name} should not pin a namespace"


def test_k8s_deployments(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    deployments = _k8s_kind(k8s_docs, "Deployment")
    assert deployments
    configmaps = {d["metadata"]["name"] for d in _k8s_kind(k8s_docs, "ConfigMap")}
    secrets = {d["metadata"]["name"] for d in _k8s_kind(k8s_docs, "Secret")}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        assert deployment["apiVersion"] == "apps/v1"
        spec = deployment["spec"]
        selector = spec["selector"]["matchLabels"]
        labels = spec["template"]["metadata"]["labels"]
        assert selector, name
        assert selector.items() <= labels.items(), f"{name}: selector does not match the pods"
        containers = spec["template"]["spec"]["containers"]
        assert containers, name
        for container in containers:
            assert container["image"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            refs = container["envFrom"]
            assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= configmaps
            assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} <= secrets
            assert any("secretRef" in r for r in refs), f"{name} gets no signing key"
            command = [*container.get("command", []), *container.get("args", [])]
            assert command[0] == "durable-graph", name
            _check_cli_args(command[1:])


def test_k8s_worker_and_scheduler(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    worker = _deployment(k8s_docs, "worker")
    scheduler = _deployment(k8s_docs, "scheduler")
    assert worker["spec"]["replicas"] == 3
    assert scheduler["spec"]["replicas"] >= 2
    pod = worker["spec"]["template"]["spec"]
    # Celery's warm shutdown needs time; Kubernetes' default is 30 s.
    assert pod["terminationGracePeriodSeconds"] >= 60
    container = pod["containers"][0]
    assert container["args"][0] == "worker"
    assert scheduler["spec"]["template"]["spec"]["containers"][0]["args"][0] == "scheduler"
    # The probe pings celery@$HOSTNAME, Celery's default node name; a custom one breaks it.
    probe = " ".join(container["livenessProbe"]["exec"]["command"])
    assert "celery@$HOSTNAME" in probe
    assert not {"-n", "--hostname"} & set(container["args"])


def test_k8s_settings_load(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    env: dict[str, str] = {}
    for doc in [*_k8s_kind(k8s_docs, "ConfigMap"), *_k8s_kind(k8s_docs, "Secret")]:
        data = doc.get("data", {}) | doc.get("stringData", {})
        assert set(data) <= KNOWN_ENV, set(data) - KNOWN_ENV
        assert all(isinstance(v, str) for v in data.values()), "values must be strings"
        env |= data
    assert codec.ENV_KEY in env
    settings = config.Settings.from_env(env)
    assert settings.codec is not None
    assert settings.redis_url == env[config.ENV_REDIS_URL]


def test_k8s_hpa_targets_the_worker(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    worker = _deployment(k8s_docs, "worker")
    for hpa in _k8s_kind(k8s_docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", worker["metadata"]["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # Utilization targets are relative to requests, which every container must set.
        for metric in hpa["spec"]["metrics"]:
            resource = metric["resource"]["name"]
            for container in worker["spec"]["template"]["spec"]["containers"]:
                assert resource in container["resources"]["requests"]


def test_kustomization_lists_every_manifest_but_the_placeholder_secret(
    k8s_docs: dict[str, list[dict[str, Any]]],
) -> None:
    (kustomization,) = _k8s_kind(k8s_docs, "Kustomization")
    listed = set(kustomization["resources"])
    secret_files = {
        name for name, docs in k8s_docs.items() if any(d["kind"] == "Secret" for d in docs)
    }
    assert listed == set(k8s_docs) - secret_files - {"kustomization.yaml"}
    images = {i["name"] for i in kustomization.get("images", [])}
    for deployment in _k8s_kind(k8s_docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"].split(":")[0] in images


# --- operations: ports, healthchecks, restarts, probes, autoscaling on the queue -----------

KEDA = ROOT / "deploy" / "keda" / "worker-scaledobject.yaml"


def _interpolate_with(text: str, env: dict[str, str]) -> str:
    """Compose interpolation with ``env`` set (defaults for the rest)."""

    def value(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if name in env and (env[name] or not (operator or "").startswith(":")):
            return env[name]
        return rest if operator and operator.endswith("-") else "x"

    return INTERPOLATION.sub(value, text)


def _parses(argv: list[str]) -> None:
    from durable_graph.cli import build_parser

    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"durable-graph rejects {shlex.join(argv)!r} (exit {exc.code})")


def test_compose_redis_is_not_published_on_the_hosts_6379_by_default(
    compose: dict[str, Any],
) -> None:
    (port,) = compose["services"]["redis"]["ports"]
    host_ip, host_port, container_port = _interpolate(str(port)).split(":")
    assert (host_ip, container_port) == ("127.0.0.1", "6379")
    assert host_port != "6379"
    assert _interpolate_with(str(port), {"DG_REDIS_PORT": "7000"}).split(":")[1] == "7000"
    assert "DG_REDIS_PORT" in README.read_text()


@pytest.mark.parametrize("service", ["worker", "scheduler"])
def test_compose_healthchecks_ping_with_the_cli(compose: dict[str, Any], service: str) -> None:
    test = compose["services"][service]["healthcheck"]["test"]
    argv = shlex.split(test[1].replace("$$", "$")) if test[0] == "CMD-SHELL" else test[1:]
    assert argv[:2] == ["durable-graph", "ping"], argv
    _parses(argv[1:])
    if service == "worker":  # its own node, Celery's default name in the container
        assert "celery@$HOSTNAME" in argv
    assert compose["services"][service]["healthcheck"]["timeout"]


def test_compose_every_service_restarts(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("restart") in {"unless-stopped", "always"}, name


@pytest.mark.parametrize("env", [{}, {"DG_BROKER_URL": "amqp://u:p@rabbitmq:5672//"}])
def test_compose_flower_reads_the_workers_broker(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    flower = compose["services"]["flower"]
    command = " ".join(flower["command"])
    found = re.search(r"--broker=(\S+)", _interpolate_with(command, env))
    broker = found.group(1) if found else _interpolate_with(
        str(flower.get("environment", {}).get("CELERY_BROKER_URL", "")), env)
    worker_env = compose["services"]["worker"]["environment"]
    workers = _interpolate_with(str(worker_env.get(config.ENV_BROKER_URL, "")), env) or \
        _interpolate_with(str(worker_env[config.ENV_REDIS_URL]), env)
    if not env and broker != workers:
        pytest.fail(f"Flower watches {broker}, the workers use {workers}")
    if env and "DG_BROKER_URL" in str(worker_env.get(config.ENV_BROKER_URL, "")):
        assert broker == workers


def test_k8s_worker_probes_and_graceful_shutdown(
    k8s_docs: dict[str, list[dict[str, Any]]],
) -> None:
    pod = _deployment(k8s_docs, "worker")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        argv = shlex.split(command[-1]) if command[0] == "sh" else command
        assert argv[:2] == ["durable-graph", "ping"], argv
        _parses(argv[1:])
        assert container[probe]["timeoutSeconds"] > float(argv[argv.index("--timeout") + 1])
    assert container["lifecycle"]["preStop"]["exec"]["command"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    scheduler = _deployment(k8s_docs, "scheduler")["spec"]["template"]["spec"]["containers"][0]
    argv = scheduler["livenessProbe"]["exec"]["command"]
    assert argv[:2] == ["durable-graph", "ping"]
    _parses(argv[1:])


def test_keda_scales_the_workers_on_the_queue_list(
    k8s_docs: dict[str, list[dict[str, Any]]],
) -> None:
    (scaled,) = [d for d in yaml.safe_load_all(KEDA.read_text()) if d]
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    worker = _deployment(k8s_docs, "worker")
    target = scaled["spec"]["scaleTargetRef"]
    assert target["name"] == worker["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    (configmap,) = _k8s_kind(k8s_docs, "ConfigMap")
    assert trigger["metadata"]["listName"] == configmap["data"][config.ENV_QUEUE]
    assert int(trigger["metadata"]["listLength"]) >= 1
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
