"""boot/timescaledb.sh is idempotent: `start` when running, a crash's stale postmaster.pid, a pid
file whose pid now belongs to another process, `stop` twice.

Runs a SEPARATE throwaway cluster (LOCAL_DB_DIR in a temp dir, a free port); the project's shared
cluster is never touched. Skipped where the script cannot run without installing anything: not
Debian/Ubuntu, or PostgreSQL server binaries or the timescaledb extension missing."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from support import ROOT, free_port

SCRIPT = ROOT / "boot" / "timescaledb.sh"


def _pg_ready_machine() -> str | None:
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return "not a Debian/Ubuntu machine"
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bindirs:
        return "PostgreSQL server binaries are not installed"
    version = Path(bindirs[-1]).parent.parent.name
    if not Path(f"/usr/share/postgresql/{version}/extension/timescaledb.control").exists():
        return "the timescaledb extension is not installed (the script would build it)"
    if os.geteuid() == 0:
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user"
    return None


pytestmark = pytest.mark.skipif(_pg_ready_machine() is not None, reason=str(_pg_ready_machine()))


class Cluster:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="analytics-boot-test-"))
        self.tmp.chmod(0o755)  # the postgres user must be able to reach the data dir
        self.data = self.tmp / "pg"
        self.port = free_port()
        assert self.port != 54329
        self.env = {**os.environ, "LOCAL_DB_DIR": str(self.data), "LOCAL_DB_PORT": str(self.port),
                    "LOCAL_DB_NAME": "boottest"}

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/boottest"

    def query(self, q: str):
        with psycopg.connect(self.url(), connect_timeout=5, autocommit=True) as conn:
            cur = conn.execute(q)
            return cur.fetchone() if cur.description else None

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def processes_in_data_dir(self) -> list[int]:
        """Postgres processes run with the data directory as their working directory."""
        target = os.path.realpath(self.data)
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if os.path.realpath(proc / "cwd") == target:
                        pids.append(int(proc.name))
                except OSError:
                    pass
        return pids


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.run("stop")
        # Belt and braces: nothing of this throwaway cluster may outlive the test.
        for pid in c.processes_in_data_dir():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(c.tmp, ignore_errors=True)


def wait_gone(c: Cluster, pid: int | None = None, timeout: float = 15) -> None:
    """Until the cluster's processes have exited, and `pid` is reaped (not even a zombie)."""
    def alive() -> bool:
        return bool(c.processes_in_data_dir()) or (pid is not None and Path(f"/proc/{pid}").exists())
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive()


def test_start_twice_then_status(cluster):
    first = cluster.run("start")
    assert first.returncode == 0, first.stderr
    assert "started" in first.stderr
    pid = cluster.postmaster_pid()
    assert cluster.query("SELECT 1") == (1,)
    cluster.query("CREATE EXTENSION IF NOT EXISTS timescaledb")  # preloaded: creatable
    assert cluster.query("SELECT extname FROM pg_extension WHERE extname = 'timescaledb'") == (
        "timescaledb",)

    again = cluster.run("start")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert cluster.postmaster_pid() == pid  # the same server, not a second one
    status = cluster.run("status")
    assert status.returncode == 0 and "running" in status.stderr
    assert cluster.run("url").stdout.strip() == cluster.url()


def test_start_after_crash_with_stale_pid_file(cluster):
    assert cluster.run("start").returncode == 0
    pid = cluster.postmaster_pid()
    os.kill(pid, signal.SIGKILL)  # our throwaway cluster's postmaster only
    wait_gone(cluster, pid)
    assert (cluster.data / "postmaster.pid").exists()  # what a crash leaves behind
    assert cluster.run("status").returncode == 3

    r = cluster.run("start")
    assert r.returncode == 0, r.stderr
    assert "started" in r.stderr
    assert cluster.postmaster_pid() != pid
    assert cluster.query("SELECT 1") == (1,)


def test_start_when_stale_pid_now_belongs_to_another_process(cluster):
    """After a crash and a reboot the recorded pid may be reused by an unrelated process: that
    is not a running server, and start must not believe it is."""
    assert cluster.run("stop").returncode == 0
    wait_gone(cluster)
    # Owned by the cluster's owner, as a reused pid would be (pg_ctl cannot probe others').
    impostor = subprocess.Popen(["sleep", "60"], **({"user": "postgres"} if os.geteuid() == 0 else {}))
    try:
        pidfile = cluster.data / "postmaster.pid"
        pidfile.write_text(f"{impostor.pid}\n{cluster.data}\n0\n{cluster.port}\n")
        shutil.chown(pidfile, "postgres", "postgres") if os.geteuid() == 0 else None
        assert cluster.run("status").returncode == 3

        r = cluster.run("start")
        assert r.returncode == 0, r.stderr
        assert cluster.postmaster_pid() != impostor.pid
        assert cluster.query("SELECT 1") == (1,)
        assert impostor.poll() is None  # the unrelated process was left alone
    finally:
        impostor.kill()
        impostor.wait(5)


def test_stop_twice(cluster):
    assert cluster.run("start").returncode == 0
    first = cluster.run("stop")
    assert first.returncode == 0 and "stopped" in first.stderr
    wait_gone(cluster)
    second = cluster.run("stop")
    assert second.returncode == 0 and "not running" in second.stderr
    assert cluster.run("status").returncode == 3
