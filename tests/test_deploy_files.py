"""Static checks of the deployment files: Dockerfile, docker-compose.yml, railway.json,
boot/docker-run.sh and the example notebook. Docker itself is not needed."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01-send-and-read-events.ipynb"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


# --- docker-compose.yml -------------------------------------------------------------------

def test_compose_config_is_valid():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(
        [binary, "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_compose_services_and_wiring():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    app, db = services["app"], services["timescale_pg_db"]
    assert app["build"] == "."
    assert app["env_file"] == ".env.compose"
    assert "8002:8002" in app["ports"]
    assert app["depends_on"]["timescale_pg_db"]["condition"] == "service_healthy"
    assert app["restart"] == "unless-stopped"
    assert db["image"] == "timescale/timescaledb:latest-pg17"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert db["healthcheck"]["retries"] == 10
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]


def test_compose_needs_no_dotenv():
    # Values come from .env.compose via env_file, never from ${VAR} interpolation of a .env.
    text = (ROOT / "docker-compose.yml").read_text()
    assert re.search(r"(?<!\$)\$\{?[A-Za-z_]", text) is None
    assert "timescale_pg_db" in text and "app:" in text


def test_env_compose_points_the_app_at_the_compose_database():
    values = {}
    for line in (ROOT / ".env.compose").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    assert values["POSTGRES_HOST"] == "timescale_pg_db"
    assert values["POSTGRES_PORT"] == "5432"
    assert values["PORT"] == "8002"
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert values.get(key), key
    assert "DATABASE_URL" not in values  # it would take precedence over POSTGRES_*


def test_compose_scale_profile():
    """`--profile scale`: two API instances reading from a streaming replica, sharing Redis; the
    default stack (no profile) is unchanged."""
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {n for n, s in services.items() if "scale" in s.get("profiles", [])} == {
        "api-1", "api-2", "timescale_pg_replica", "redis"}
    assert not any(services[n].get("profiles") for n in ("app", "timescale_pg_db"))
    scale_env = {}
    for line in (ROOT / ".env.compose.scale").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            scale_env[key.strip()] = value.strip()
    assert "@timescale_pg_replica:5432/" in scale_env["DATABASE_READ_URLS"]
    assert scale_env["RATE_LIMIT_STORAGE_URL"].startswith("redis://redis:")
    assert "DATABASE_URL" not in scale_env
    ports = set()
    for name in ("api-1", "api-2"):
        api = services[name]
        assert api["build"] == "." and api["env_file"] == [".env.compose", ".env.compose.scale"]
        assert set(api["depends_on"]) == {"timescale_pg_db", "timescale_pg_replica", "redis"}
        ports |= set(api["ports"])
    assert ports == {"8003:8002", "8004:8002"}
    replica = services["timescale_pg_replica"]
    assert replica["image"] == services["timescale_pg_db"]["image"]  # same major version
    mounts = dict(v.split(":")[:2] for v in replica["volumes"])
    assert mounts["./boot/compose-replica.sh"] == replica["entrypoint"][-1]
    assert any(v.startswith("./boot/compose-primary-replication.sh:/docker-entrypoint-initdb.d/")
               for v in services["timescale_pg_db"]["volumes"])
    for script in ("compose-replica.sh", "compose-primary-replication.sh"):
        text = (ROOT / "boot" / script).read_text()
        assert text.startswith("#!/bin/sh\n")
        result = subprocess.run(["sh", "-n", str(ROOT / "boot" / script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert "pg_basebackup" in (ROOT / "boot" / "compose-replica.sh").read_text()


# --- railway.json -------------------------------------------------------------------------

def test_railway_json():
    config = json.loads((ROOT / "railway.json").read_text())
    assert config["deploy"]["healthcheckPath"] == "/healthz"
    assert config["build"]["builder"] == "DOCKERFILE"
    assert (ROOT / config["build"]["dockerfilePath"]).is_file()


# --- Dockerfile and boot/docker-run.sh ----------------------------------------------------

def test_dockerfile_base_image_and_non_root_user():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.12-slim")
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert ("EXPOSE", "8002") in instructions
    assert instructions[-1] == ("CMD", '["/app/boot/docker-run.sh"]')


def test_dockerfile_copies_the_layout_gunicorn_conf_expects():
    copies = [args.split() for keyword, args in _dockerfile_instructions() if keyword == "COPY"]
    assert ["src/", "/app/src/"] in copies
    assert ["boot/", "/app/boot/"] in copies
    # gunicorn.conf.py chdirs to <its dir>/../src; in the image that must be /app/src.
    namespace = {"__file__": "/app/boot/gunicorn.conf.py"}
    exec(compile((ROOT / "boot" / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"),
         namespace)
    assert os.path.normpath(namespace["chdir"]) == "/app/src"


def test_dockerfile_names_no_package_index():
    text = (ROOT / "Dockerfile").read_text()
    assert "--index-url" not in text and "--extra-index-url" not in text
    assert "pip install --no-cache-dir -r" in text


def test_docker_run_script():
    script = ROOT / "boot" / "docker-run.sh"
    assert os.access(script, os.X_OK), "boot/docker-run.sh must be executable"
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "exec gunicorn -c /app/boot/gunicorn.conf.py main:app" in text
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dockerignore_keeps_local_state_out_of_the_image():
    entries = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".venv", ".data", ".git", "notebooks", "tests", "bench"):
        assert entry in entries, entry


# --- notebook -----------------------------------------------------------------------------

def _notebook() -> dict:
    return json.loads(NOTEBOOK.read_text())


def test_notebook_is_nbformat_4_and_reads_the_base_url():
    nb = _notebook()
    assert nb["nbformat"] == 4
    code_cells = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    sources = ["".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
               for cell in code_cells]
    assert any("ANALYTICS_BASE_URL" in source for source in sources)
    assert any("/api/events/" in source for source in sources)


def test_notebook_has_no_stored_outputs():
    for cell in _notebook()["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == []
            assert cell["execution_count"] is None


def test_notebook_schema():
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.read(str(NOTEBOOK), as_version=4))
