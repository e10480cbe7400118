"""The notebooks keep working against a running service (executed headless, like a user would)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JUPYTER = Path(sys.executable).parent / "jupyter"


def _execute(name: str, env: dict[str, str], tmp_path: Path) -> str:
    """Run every cell headless, as `jupyter nbconvert --execute` does for a user; the executed
    notebook's text (outputs included)."""
    out = tmp_path / "out.ipynb"
    r = subprocess.run([str(JUPYTER), "nbconvert", "--to", "notebook", "--execute", str(ROOT / "notebooks" / name),
                        "--output", str(out), "--ExecutePreprocessor.timeout=60"],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return out.read_text()


@pytest.mark.skipif(not JUPYTER.exists() and not shutil.which("jupyter"), reason="jupyter not installed")
def test_send_and_read_notebook_runs(server, tmp_path):
    text = _execute("01-send-and-read-events.ipynb",
                    {"ANALYTICS_BASE_URL": server.url, "ANALYTICS_API_KEY": server.key["read"]}, tmp_path)
    assert "operating_system" in text  # the aggregate rows were printed


@pytest.mark.skipif(not JUPYTER.exists() and not shutil.which("jupyter"), reason="jupyter not installed")
def test_sqlmodel_notebook_reads_the_services_schema(server, tmp_path):
    """The second notebook reads the events table of the service's DB_SCHEMA (a test schema
    here, not public) with SQLModel and time_bucket."""
    import httpx
    r = httpx.post(server.url + "/api/events/", json={"page": "/notebook-02-probe"}, timeout=10)
    assert r.status_code == 201, r.text
    text = _execute("02-sqlmodel-queries.ipynb",
                    {"DATABASE_URL": server.database_url, "DB_SCHEMA": server.env["DB_SCHEMA"]}, tmp_path)
    assert "/notebook-02-probe" in text  # the latest events, printed by the last cell
