"""The delivery files: CI workflow, Docker images, the compose stack and its monitoring configs,
and the README's two commands. No Docker engine runs here: the stack is checked statically."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOWS = ROOT / ".github" / "workflows"
DOCKERFILES = sorted((ROOT / "docker").glob("*/Dockerfile"))
COMPOSE_FILE = ROOT / "docker-compose.yml"
MONITORING = ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
STATSD_MAPPING = MONITORING / "statsd" / "mapping.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def _yaml(path: Path) -> dict[str, Any]:
    # YAML 1.1 reads the workflow key `on` as True; BaseLoader keeps every key a string.
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    return loaded


def _compose() -> dict[str, Any]:
    """The compose file as compose reads it: anchors and `<<` merge keys resolved."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


SERVICES: dict[str, dict[str, Any]] = _compose()["services"]
AIRFLOW_SERVICES = sorted(name for name in SERVICES if name.startswith("airflow-"))


def _check_schema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_workflows_follow_the_github_schema() -> None:
    done = _check_schema("vendor.github-workflows", *WORKFLOWS.glob("*.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_runs_the_readme_test_command_and_builds_every_image() -> None:
    ci = _yaml(WORKFLOWS / "ci.yml")
    steps = ci["jobs"]["test"]["steps"]
    assert any(step.get("run") == "make test" for step in steps)
    assert "make test" in (ROOT / "README.md").read_text()
    images = ci["jobs"]["images"]
    built = set(images["strategy"]["matrix"]["image"])
    assert built == {path.parent.name for path in DOCKERFILES}
    build = next(s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push"))
    assert build["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"


def test_deployments_go_dev_then_staging_then_prod_with_platform_secrets() -> None:
    jobs = _yaml(WORKFLOWS / "ci.yml")["jobs"]
    order = [jobs[f"deploy-{name}"] for name in ("dev", "staging", "prod")]
    assert [job["with"]["environment"] for job in order] == ["dev", "staging", "prod"]
    assert order[1]["needs"] == "deploy-dev" and order[2]["needs"] == "deploy-staging"
    assert "refs/tags/v" in order[0]["if"]
    deploy = _yaml(WORKFLOWS / "deploy.yml")["jobs"]["deploy"]
    assert deploy["environment"] == "${{ inputs.environment }}"
    text = (WORKFLOWS / "deploy.yml").read_text()
    assert set(re.findall(r"secrets\.(\w+)", text)) == {
        "COMPOSE_ENV_FILE",
        "DEPLOY_SSH_KEY",
        "DEPLOY_KNOWN_HOSTS",
        "DEPLOY_HOST",
    }


# A value on the same line (an empty `KEY=` is no secret); a `SecretStr` annotation is a type.
SECRET_VALUE = re.compile(
    # A key that ends in a secret's name (db_password, api_token; not token_pattern) set to a value.
    r"(?i)\b\w*(password|secret|token|access_key)[ \t]*[:=][ \t]*['\"]?"
    r"(?![$<{]|SecretStr\b)[A-Za-z0-9/+_-]{8,}"
)


def test_no_secret_values_are_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for name in tracked:
        path = ROOT / name
        if (
            path.suffix in {".lock", ".txt", ".csv"}
            or name.startswith("tests/")
            or not path.is_file()
        ):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [f"{name}: {m.group(0)}" for m in SECRET_VALUE.finditer(text)]
    assert offenders == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfiles_copy_only_what_exists(dockerfile: Path) -> None:
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile}: {source}"


def test_compose_file_follows_the_compose_specification() -> None:
    done = _check_schema("vendor.compose-spec", ROOT / "docker-compose.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_builds_from_files_that_exist_and_documents_its_variables() -> None:
    built = set()
    for name, service in SERVICES.items():
        build = service.get("build")
        if build:
            dockerfile = ROOT / build["context"] / build["dockerfile"]
            assert dockerfile.is_file(), name
            built.add(dockerfile.parent.name)
            # The image deploy pulls is the one CI pushes: <registry>/<docker folder>:<tag>, or
            # <docker folder>-gpu for the one built with the `cuda` extra (tests/test_gpu_image.py).
            cuda = build.get("args", {}).get("RAKUTEN_EXTRAS") == "cuda"
            image = dockerfile.parent.name + ("-gpu" if cuda else "")
            assert re.search(rf"/{image}:\$\{{RAKUTEN_IMAGE_TAG\b", service["image"])
    assert built == {path.parent.name for path in DOCKERFILES}, "every image CI builds is run"
    documented = (ROOT / ".env.example").read_text()
    # `$${NAME}` is an escaped `$`: the container's shell expands it, not compose.
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text()))
    assert variables, "the compose file reads its settings from the environment"
    for variable in variables:
        assert re.search(rf"^#? ?{variable}=", documented, re.M), variable


def test_ci_script_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert script.rstrip().splitlines()[-1] == "make test"
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:60])
    assert "make run" in first_screen and "make test" in first_screen


# --- the compose stack --------------------------------------------------------------------------

# An environment variable that holds a secret, by its name.
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|SECRET_KEY|SECRET_ACCESS_KEY|FERNET_KEY)$")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environment is a mapping, so anchors can merge it"
    return {key: str(value) for key, value in environment.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command if isinstance(command, list) else command.split()


def _option(arguments: list[str], name: str) -> str:
    """The value of `--name value` or `--name=value` in a command line."""
    for index, argument in enumerate(arguments):
        if argument == name:
            return arguments[index + 1]
        if argument.startswith(f"{name}="):
            return argument.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {arguments}")


def _resolved(value: str) -> str:
    """A value as compose interpolates it: defaults taken, required secrets filled in."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{\w+(?::\?[^}]*)?\}", "secret", value)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(_resolved(url))
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def _published(service: dict[str, Any]) -> dict[int, str]:
    """Container port -> host address, of the ports a service publishes."""
    published = {}
    for port in map(str, service.get("ports", [])):
        assert port.count(":") == 2, f"{port}: publish as ADDRESS:HOST_PORT:CONTAINER_PORT"
        address, _on_host, container = port.split(":")
        published[int(container)] = address
    return published


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of a service's bind mounts."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def _one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def test_every_bind_mount_is_a_file_of_the_repo_and_every_volume_is_declared() -> None:
    declared = set(_compose().get("volumes") or {})
    for name, service in SERVICES.items():
        for source, target in _bind_mounts(service):
            assert source.startswith("./"), f"{name}: {source} is outside the project"
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            assert target.startswith("/"), f"{name}: {target}"
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_compose_takes_every_secret_from_env_with_no_default() -> None:
    """A secret is never written in the file nor given a default: compose stops when a
    required one is unset (`${NAME:?why}`); an optional one may only default to nothing."""
    from_env = re.compile(r"\$\{(\w+)(?::\?[^}]*|:-)\}")
    secrets = set()
    for name, service in SERVICES.items():
        for key, value in _environment(service).items():
            user_resolved = re.sub(r"\$\{\w+:-([^}]+)\}", r"\1", value)
            credentials = re.search(r"://[^/:@]+:([^@]+)@", user_resolved)
            secret = credentials.group(1) if credentials else value
            if credentials or (SECRET_NAME.search(key) and value):
                found = from_env.fullmatch(secret)
                assert found, f"{name}: {key}={value}"
                secrets.add(found.group(1))
    assert {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET"} <= secrets
    documented = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if re.match(r"^\w+=", line)
    )
    for secret in secrets:
        assert documented.get(secret) == "", f".env.example must leave {secret} empty"


def test_depends_on_names_services_and_waits_for_them() -> None:
    for name, service in SERVICES.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for target, wait in depends_on.items():
            assert target in SERVICES, f"{name} depends on {target}, which is not a service"
            assert not SERVICES[target].get("profiles") or service.get("profiles"), (
                f"{name} starts by default but {target} only in a profile"
            )
            condition = wait["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{target} has no healthcheck"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
                assert _one_shot(SERVICES[target]), f"{target} is not a one-shot job"


def test_long_running_services_have_healthchecks_and_one_shots_are_awaited() -> None:
    """`docker compose up -d --wait` (deploy.yml) succeeds only if both hold."""
    awaited = {
        target
        for service in SERVICES.values()
        if not _one_shot(service)
        for target, wait in (service.get("depends_on") or {}).items()
        if wait["condition"] == "service_completed_successfully"
    }
    for name, service in SERVICES.items():
        assert service.get("restart") in {"no", "unless-stopped", "always"}, f"{name}: restart"
        if _one_shot(service):
            assert service.get("profiles") or name in awaited, (
                f"{name} is a one-shot job that no long-running service waits for"
            )
        else:
            test = service.get("healthcheck", {}).get("test")
            assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"


def test_only_the_uis_publish_ports_and_only_on_localhost() -> None:
    for name, service in SERVICES.items():
        for port, address in _published(service).items():
            assert address == "127.0.0.1", f"{name} publishes {port} on {address or 'all'}"


def test_container_logs_rotate() -> None:
    for name, service in SERVICES.items():
        logging = service.get("logging") or {}
        assert logging.get("driver") == "json-file", name
        assert logging["options"]["max-size"] and int(logging["options"]["max-file"]) > 0, name


def test_third_party_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        if "build" in service:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "$" not in image, f"{name}: {image}"


def test_every_airflow_service_runs_the_same_image_and_settings() -> None:
    api_server = SERVICES["airflow-apiserver"]
    shared = _environment(api_server)
    for name in AIRFLOW_SERVICES:
        service = SERVICES[name]
        # The GPU worker runs the same Dockerfile built with the `cuda` extra, named apart.
        image = service["image"].replace("/airflow-gpu:", "/airflow:")
        assert image == api_server["image"], name
        environment = _environment(service)
        for key in (
            "AIRFLOW__CORE__EXECUTOR",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__CELERY__BROKER_URL",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__API__SECRET_KEY",
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__METRICS__STATSD_HOST",
            "RAKUTEN_MLFLOW_TRACKING_URI",
            "RAKUTEN_DATABASE_URL",
        ):
            assert environment.get(key) == shared[key], f"{name}: {key}"
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert shared["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    # Workers reach the api-server's execution API at the name and port it serves on.
    host, port = _host_port(shared["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert host == "airflow-apiserver" and port in _published(api_server)
    assert urlsplit(shared["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]).path == "/execution/"
    # Airflow's metrics reach statsd-exporter on the port it listens on.
    assert shared["AIRFLOW__METRICS__STATSD_ON"] == "True"
    statsd = _command(SERVICES[shared["AIRFLOW__METRICS__STATSD_HOST"]])
    assert _option(statsd, "--statsd.listen-udp") == f":{shared['AIRFLOW__METRICS__STATSD_PORT']}"
    # The broker and the databases are the stack's own services.
    for key in ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        assert _host_port(shared[key])[0] in SERVICES, key


def test_the_cli_of_the_tasks_reaches_the_stack_services() -> None:
    environment = _environment(SERVICES["airflow-worker"])
    host, port = _host_port(environment["RAKUTEN_MLFLOW_TRACKING_URI"])
    assert _option(_command(SERVICES[host]), "--port") == str(port)
    # MLflow answers only the Host headers it allows (its DNS-rebinding guard).
    allowed = _option(_command(SERVICES[host]), "--allowed-hosts").split(",")
    assert f"{host}:{port}" in allowed and f"127.0.0.1:{port}" in allowed
    host, port = _host_port(environment["RAKUTEN_PUSHGATEWAY_URL"])
    assert port in _published(SERVICES[host])
    database = urlsplit(_resolved(environment["RAKUTEN_DATABASE_URL"]))
    assert database.hostname == "postgres" and database.path == "/rakuten"


def test_only_airflow_init_holds_the_store_owner_and_it_migrates_and_grants() -> None:
    init = SERVICES["airflow-init"]
    for name, service in SERVICES.items():
        if name != "airflow-init":
            assert "RAKUTEN_DATABASE_ADMIN_URL" not in _environment(service), name
    owner = urlsplit(_resolved(_environment(init)["RAKUTEN_DATABASE_ADMIN_URL"]))
    assert owner.username == "rakuten_owner" and owner.path == "/rakuten"
    script = _command(init)[-1]
    for step in ("airflow db migrate", "airflow pools set gpu", "rakuten db upgrade"):
        assert step in script, step
    assert script.index("rakuten db upgrade") < script.index("rakuten db grant")
    # The UI's users are written to the file the api-server reads, on a volume they share.
    passwords = _environment(init)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    mounts = {
        name: {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
        for name, service in SERVICES.items()
        if name in {"airflow-init", "airflow-apiserver"}
    }
    folder = str(Path(passwords).parent)
    assert mounts["airflow-init"][folder] == mounts["airflow-apiserver"][folder]


def _dag_constant(name: str) -> str:
    """A string constant of dags/rakuten_common.py, read without importing Airflow."""
    tree = ast.parse((ROOT / "dags" / "rakuten_common.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                assert isinstance(node.value, ast.Constant)
                return str(node.value.value)
    raise AssertionError(f"{name} is not defined in dags/rakuten_common.py")


def test_gpu_worker_takes_the_dags_gpu_queue_with_an_nvidia_gpu() -> None:
    gpu, cpu = SERVICES["airflow-worker-gpu"], SERVICES["airflow-worker"]
    queue, pool = _dag_constant("GPU_QUEUE"), _dag_constant("GPU_POOL")
    assert gpu["profiles"] == ["gpu"] and "profiles" not in cpu
    assert _command(gpu)[:2] == ["celery", "worker"] and _command(cpu)[:2] == ["celery", "worker"]
    assert _option(_command(gpu), "--queues").split(",") == [queue]
    assert _option(_command(gpu), "--concurrency") == "1"
    # By default the CPU worker leaves the GPU queue to the GPU worker.
    cpu_queues = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", _option(_command(cpu), "--queues"))
    assert cpu_queues.split(",") == ["default"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert f"airflow pools set {pool} " in _command(SERVICES["airflow-init"])[-1]
    # Both workers see the same data, models and reports: a branch trained on one is fused on
    # the other.
    assert gpu["volumes"] == cpu["volumes"]
    assert {v.split(":")[1] for v in cpu["volumes"]} >= {
        "/opt/rakuten/data",
        "/opt/rakuten/models",
        "/opt/rakuten/reports",
    }


def test_postgres_init_creates_each_database_that_the_services_use() -> None:
    script = ROOT / "docker" / "postgres" / "init-databases.sh"
    created = dict(re.findall(r"^create_database (\w+) (\w+) ", script.read_text(), re.M))
    assert created == {"airflow": "airflow", "mlflow": "mlflow", "rakuten": "rakuten_owner"}
    mounted = dict(_bind_mounts(SERVICES["postgres"]))
    assert mounted[f"./{script.relative_to(ROOT)}"].startswith("/docker-entrypoint-initdb.d/")
    for name, service in SERVICES.items():
        for key, value in _environment(service).items():
            if "@postgres:" in value:
                url = urlsplit(_resolved(value))
                database = url.path.lstrip("/")
                assert database in created, f"{name}: {key}"
                # Its owner, or the store's app role (which `rakuten db grant` creates).
                assert url.username in {created[database], "rakuten_app"}, f"{name}: {key}"
    # What the script reads is what compose hands the container.
    needed = set(re.findall(r"\$\{(\w+):\?", script.read_text()))
    assert needed <= set(_environment(SERVICES["postgres"]))


def test_minio_init_makes_one_bucket_and_key_per_user_and_is_idempotent(tmp_path: Path) -> None:
    """docker/minio/init.sh, run twice against a stand-in `mc` that records its calls."""
    stub = tmp_path / "bin" / "mc"
    stub.parent.mkdir()
    stub.write_text(
        "#!/bin/sh\n"
        'echo "$*" >> "$TMPDIR/calls"\n'
        'case "$*" in\n'
        '  "admin policy create "*) cp "$6" "$TMPDIR/policy-$5.json" ;;\n'
        '  "admin user info "*) cat "$TMPDIR/attached-$5" 2>/dev/null || true ;;\n'
        '  "admin policy attach "*) echo "PolicyName: $5" > "$TMPDIR/attached-$7" ;;\n'
        "esac\n"
    )
    stub.chmod(0o755)
    environment = {
        **os.environ,
        "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(tmp_path),
        **{key: f"value-of-{key}" for key in _environment(SERVICES["minio-init"])},
    }
    for _ in range(2):
        subprocess.run(
            ["sh", str(ROOT / "docker" / "minio" / "init.sh")],
            env=environment,
            check=True,
            capture_output=True,
        )
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls.count("mb --ignore-existing stack/mlflow") == 2
    assert calls.count("mb --ignore-existing stack/dvc") == 2
    for bucket, key in (("mlflow", "MLFLOW_S3_ACCESS_KEY_ID"), ("dvc", "DVC_S3_ACCESS_KEY_ID")):
        attach = f"admin policy attach stack {bucket}-readwrite --user value-of-{key}"
        assert calls.count(attach) == 1, "a policy is attached once, then left alone"
        policy = json.loads((tmp_path / f"policy-{bucket}-readwrite.json").read_text())
        resources = {r for s in policy["Statement"] for r in s["Resource"]}
        assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    # MLflow stores its artifacts in its bucket, with that bucket's key.
    mlflow = SERVICES["mlflow"]
    assert _option(_command(mlflow), "--artifacts-destination") == "s3://mlflow/"
    assert _environment(mlflow)["AWS_ACCESS_KEY_ID"].startswith("${MLFLOW_S3_ACCESS_KEY_ID:")
    assert _host_port(_environment(mlflow)["MLFLOW_S3_ENDPOINT_URL"])[0] == "minio"


def test_mlflow_server_runs_the_locked_version_lean() -> None:
    lock = (ROOT / "uv.lock").read_text()
    locked = re.search(r'^name = "mlflow"\nversion = "([^"]+)"', lock, re.M)
    assert locked
    dockerfile = (ROOT / "docker" / "mlflow" / "Dockerfile").read_text()
    assert f"mlflow=={locked.group(1)} " in dockerfile
    mlflow = SERVICES["mlflow"]
    assert _option(_command(mlflow), "--workers") == "1"
    assert _environment(mlflow)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert _host_port(_environment(mlflow)["MLFLOW_BACKEND_STORE_URI"])[0] == "postgres"


def test_docker_build_context_leaves_out_local_state_and_keeps_what_is_copied() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".env", ".git", ".venv", ".venv-airflow", "data", "models"} <= set(ignored)
    for dockerfile in DOCKERFILES:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY") and "--from=" not in line:
                for source in (w for w in line.split()[1:-1] if not w.startswith("--")):
                    assert not any(fnmatch.fnmatch(source, p) for p in ignored), source


# --- monitoring ---------------------------------------------------------------------------------


def test_prometheus_scrapes_stack_services_and_keeps_pushed_labels() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["pushgateway"]["honor_labels"] is True
    for job in jobs.values():
        for static in job["static_configs"]:
            for target in static["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host == "localhost" or host in SERVICES, f"{job['job_name']}: {target}"
    statsd = _command(SERVICES["statsd-exporter"])
    assert f"statsd-exporter{_option(statsd, '--web.listen-address')}" in str(jobs["airflow"])
    mounted = dict(_bind_mounts(SERVICES["prometheus"]))
    config_file = _option(_command(SERVICES["prometheus"]), "--config.file")
    assert mounted[f"./{PROMETHEUS_CONFIG.relative_to(ROOT)}"] == config_file


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_prometheus_config_passes_promtool() -> None:
    done = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _mappings() -> list[dict[str, Any]]:
    mapping = yaml.safe_load(STATSD_MAPPING.read_text())
    assert mapping["defaults"]["match_type"] == "glob"
    mappings: list[dict[str, Any]] = mapping["mappings"]
    return mappings


def _expand(template: str, captures: tuple[str, ...]) -> str:
    """A label template with its `$n` replaced by the n-th captured field."""
    return re.sub(r"\$(\d+)", lambda m: captures[int(m.group(1)) - 1], template)


def _statsd_map(metric: str) -> tuple[str, dict[str, str]] | None:
    """What statsd-exporter makes of a StatsD name: (name, labels), or None when dropped."""
    for mapping in _mappings():
        pattern = re.escape(mapping["match"]).replace(r"\*", r"([^.]+)")
        match = re.fullmatch(pattern, metric)
        if match:
            if mapping.get("action") == "drop":
                return None
            labels = {
                key: _expand(str(value), match.groups())
                for key, value in (mapping.get("labels") or {}).items()
            }
            return mapping["name"], labels
    return re.sub(r"[^a-zA-Z0-9_]", "_", metric), {}


def test_statsd_mapping_is_well_formed() -> None:
    label_keys: dict[str, set[str]] = {}
    for mapping in _mappings():
        assert set(mapping) >= {"match", "name"}, mapping
        if mapping.get("action") == "drop":
            continue
        assert mapping["match"].startswith("airflow."), mapping["match"]
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", mapping["name"]), mapping["name"]
        captures = mapping["match"].count("*")
        labels = mapping.get("labels") or {}
        for value in labels.values():
            assert all(1 <= int(n) <= captures for n in re.findall(r"\$(\d+)", str(value)))
        # statsd-exporter refuses one metric name with two label sets.
        keys = label_keys.setdefault(mapping["name"], set(labels))
        assert keys == set(labels), mapping["name"]


@pytest.mark.parametrize(
    ("statsd", "expected"),
    [
        (
            "airflow.dagrun.duration.success.rakuten_training",
            ("airflow_dagrun_duration_seconds", {"dag_id": "rakuten_training", "state": "success"}),
        ),
        (
            "airflow.dagrun.duration.failed.rakuten_batch_predict",
            (
                "airflow_dagrun_duration_seconds",
                {"dag_id": "rakuten_batch_predict", "state": "failed"},
            ),
        ),
        (
            "airflow.ti.finish.rakuten_training.train_gpu.failed",
            (
                "airflow_ti_finish_total",
                {"dag_id": "rakuten_training", "task_id": "train_gpu", "state": "failed"},
            ),
        ),
        (
            "airflow.dag.rakuten_training.fuse.duration",
            ("airflow_task_duration_seconds", {"dag_id": "rakuten_training", "task_id": "fuse"}),
        ),
        ("airflow.scheduler_heartbeat", ("airflow_scheduler_heartbeat_total", {})),
        ("airflow.ti_failures", ("airflow_ti_failures_total", {})),
        ("airflow.pool.running_slots.gpu", ("airflow_pool_running_slots", {"pool": "gpu"})),
        ("airflow.ti.finish", None),
        ("airflow.dagrun.duration.success", None),
    ],
)
def test_statsd_mapping_labels_airflow_metrics(
    statsd: str, expected: tuple[str, dict[str, str]] | None
) -> None:
    assert _statsd_map(statsd) == expected


def _airflow_metric_registry() -> Path | None:
    found = sorted(
        ROOT.glob(
            ".venv-airflow/lib/python*/site-packages/airflow/_shared/observability/metrics/"
            "metrics_template.yaml"
        )
    )
    return found[0] if found else None


@pytest.mark.skipif(_airflow_metric_registry() is None, reason=".venv-airflow is not built")
def test_statsd_mapping_matches_names_that_airflow_emits() -> None:
    """Every mapped glob is a metric of the pinned Airflow's registry (legacy or modern name)."""
    registry = yaml.safe_load(_airflow_metric_registry().read_text())  # type: ignore[union-attr]
    emitted = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("name"), str) and "type" in node:
                for name in (node["name"], node.get("legacy_name") or "-"):
                    if name != "-":
                        emitted.add("airflow." + re.sub(r"\{\w+\}", "*", name))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(registry)
    assert emitted, "the registry lists Airflow's metrics"
    for mapping in _mappings():
        assert mapping["match"] in emitted, f"Airflow emits no {mapping['match']}"


def _grafana_provisioning(kind: str) -> dict[str, Any]:
    files = sorted((GRAFANA / "provisioning" / kind).glob("*.yml"))
    assert len(files) == 1, files
    loaded: dict[str, Any] = yaml.safe_load(files[0].read_text())
    assert loaded["apiVersion"] == 1
    return loaded


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards_folder() -> None:
    (datasource,) = _grafana_provisioning("datasources")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["uid"]
    host, port = _host_port(datasource["url"])
    assert host in SERVICES and port in _published(SERVICES[host])
    (provider,) = _grafana_provisioning("dashboards")["providers"]
    mounts = dict(_bind_mounts(SERVICES["grafana"]))
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]
    home = _environment(SERVICES["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(provider["options"]["path"])
    assert (GRAFANA / "dashboards" / Path(home).name).is_file()


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_query_the_provisioned_prometheus_for_mapped_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    (datasource,) = _grafana_provisioning("datasources")["datasources"]
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        for source in (panel["datasource"], *(t["datasource"] for t in panel["targets"])):
            assert source == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    mapped = {m["name"] for m in _mappings() if m.get("action") != "drop"}
    for query in _dashboard_queries(dashboard):
        for metric in re.findall(r"\b(airflow_\w+?)(?:_bucket|_sum|_count)?\b(?![(\w])", query):
            assert metric in mapped, f"{path.name}: {metric} is not a mapped metric"


def test_the_pipeline_dashboard_shows_dag_run_durations_and_task_failures() -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "rakuten-pipeline.json").read_text())
    assert dashboard["title"] == "Rakuten pipeline"
    queries = " ".join(_dashboard_queries(dashboard))
    assert "airflow_dagrun_duration_seconds" in queries
    assert re.search(r'airflow_ti_finish_total\{[^}]*state="failed"', queries)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_are_valid_promql(path: Path, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, Grafana's variables given values."""
    values = {
        "$__range_s": "86400",
        "$__range": "1d",
        "$__rate_interval": "5m",
        "$__interval": "1m",
        "$dag_id": ".*",
        "$step": ".*",
    }
    rules = []
    for index, query in enumerate(_dashboard_queries(json.loads(path.read_text()))):
        for variable, value in values.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"unknown Grafana variable in {query}"
        rules.append({"record": f"dashboard:query_{index}", "expr": query})
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    done = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
