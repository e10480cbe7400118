"""A `.env` file at the repository root is read by every part that takes settings: the service's
gunicorn command (boot/gunicorn.conf.py) and the Makefile's choice of database, not only the app
(src/analytics/config.py). Each test works on a copy in a temp directory: a `.env` in the real
repository would reach every server the suite starts."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import ROOT

def _env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def _gunicorn_settings(tree: Path) -> dict[str, str]:
    """The settings gunicorn itself resolves from the config file (`--print-config`), for a
    trivial app in `tree`."""
    env = {**_env_without("HOST", "PORT", "WEB_CONCURRENCY", "GRACEFUL_TIMEOUT", "WORKER_TIMEOUT", "LOG_LEVEL"),
           "PYTHONPATH": str(ROOT / "src")}  # the worker class, analytics.web.worker
    out = subprocess.run([str(Path(sys.executable).parent / "gunicorn"), "--print-config", "-c",
                          "boot/gunicorn.conf.py", "main:app"], cwd=tree, env=env, capture_output=True,
                         text=True, check=True).stdout
    shown = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    return {k.strip(): shown[k].strip() for k in shown
            if k.strip() in ("bind", "workers", "graceful_timeout", "timeout", "loglevel")}


def test_gunicorn_settings_come_from_dotenv_at_the_repository_root(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "src").mkdir()
    shutil.copy(ROOT / "boot" / "gunicorn.conf.py", tmp_path / "boot")
    (tmp_path / "src" / "main.py").write_text("async def app(scope, receive, send):\n    pass\n")
    assert _gunicorn_settings(tmp_path) == {  # the defaults
        "bind": "['127.0.0.1:8002']", "workers": "2", "graceful_timeout": "30", "timeout": "60", "loglevel": "info"}
    (tmp_path / ".env").write_text("HOST=0.0.0.0\nPORT=9123\nWEB_CONCURRENCY=3\nGRACEFUL_TIMEOUT=5\n"
                                   "WORKER_TIMEOUT=7\nLOG_LEVEL=WARNING\n")
    assert _gunicorn_settings(tmp_path) == {
        "bind": "['0.0.0.0:9123']", "workers": "3", "graceful_timeout": "5", "timeout": "7", "loglevel": "warning"}


def _make_db(tree: Path) -> str:
    env = _env_without("DATABASE_URL", "POSTGRES_HOST")
    return subprocess.run(["make", "-n", "db"], cwd=tree, env=env, capture_output=True, text=True,
                          check=True).stdout


def test_make_uses_the_database_a_dotenv_names_instead_of_a_local_cluster(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path)
    assert "timescaledb.sh start" in _make_db(tmp_path)  # nothing configured: the local cluster
    (tmp_path / ".env").write_text("# DATABASE_URL=postgresql://commented/out\nDEBUG=1\n")
    assert "timescaledb.sh start" in _make_db(tmp_path)
    (tmp_path / ".env").write_text("DATABASE_URL = postgresql://u:p@db.example:5432/x  # production\n")
    assert "external database" in _make_db(tmp_path)
    (tmp_path / ".env").write_text("POSTGRES_HOST=pg\n")
    assert "external database" in _make_db(tmp_path)


def test_every_setting_has_a_line_in_the_readme():
    """Every name read through python-decouple (the app's config.py and gunicorn's config) is in
    the README's Configuration section."""
    import re
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for path in (ROOT / "src" / "analytics" / "config.py", ROOT / "boot" / "gunicorn.conf.py"):
        names |= set(re.findall(r"""(?:config|setting)\(\s*["']([A-Z][A-Z0-9_]+)["']""", path.read_text()))
    assert len(names) > 60  # the pattern still finds them
    missing = sorted(n for n in names if f"`{n}`" not in section)
    assert not missing, f"settings without a README line: {missing}"
