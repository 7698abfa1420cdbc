"""The delivery files: CI workflow, Docker images, compose file and the README's two commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOWS = ROOT / ".github" / "workflows"
DOCKERFILES = sorted((ROOT / "docker").glob("*/Dockerfile"))


def _yaml(path: Path) -> dict[str, Any]:
    # YAML 1.1 reads the workflow key `on` as True; BaseLoader keeps every key a string.
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    return loaded


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
    compose = _yaml(ROOT / "docker-compose.yml")
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
    documented = (ROOT / ".env.example").read_text()
    variables = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    assert variables, "the compose file reads its settings from the environment"
    for variable in variables:
        assert re.search(rf"^#? ?{variable}=", documented, re.M), variable


def test_ci_script_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert script.rstrip().splitlines()[-1] == "make test"
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:60])
    assert "make run" in first_screen and "make test" in first_screen
