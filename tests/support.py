"""Test support: a real server process, schema-per-run isolation, and a TCP proxy to cut the DB."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
VENV_BIN = Path(sys.executable).parent


def database_url() -> str:
    sys.path.insert(0, str(SRC))
    from analytics.config import _database_url  # the service's own resolution rules
    return _database_url()


def chromium_path() -> str | None:
    """The headless Chromium boot/chromium.sh provides (`make test` installs Debian's package
    when missing; CHROMIUM_PATH overrides), or None where there is none."""
    r = subprocess.run(["bash", str(ROOT / "boot" / "chromium.sh"), "path"], capture_output=True, text=True)
    return r.stdout.strip() or None


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_schema_name(prefix: str = "test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def copy_tree(dest: Path, git_ref: str | None = None) -> Path:
    """src/ and boot/ of this working tree (or of a commit) in `dest`, to run as a Server(root=dest):
    another version of the service, or this one with an extra migration revision."""
    dest.mkdir(parents=True, exist_ok=True)
    if git_ref is None:
        for part in ("src", "boot"):
            shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", git_ref, "src", "boot"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def connect(url: str, schema: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
    return conn


# The shape of the defaults (two windows each, so the benchmarks measure what production pays),
# with amounts no test or benchmark reaches.
HIGH_RATE_LIMITS = {"RATE_LIMIT_INGEST": "100000000/10 seconds;1000000000/hour",
                    "RATE_LIMIT_READ": "100000000/second;1000000000/minute"}


class Server:
    """The service as production runs it (gunicorn + uvicorn workers), on a free port."""

    def __init__(self, database_url: str, schema: str, *, workers: int = 1,
                 env: dict | None = None, log_path: Path | None = None, app: str = "main:app",
                 root: Path = ROOT, keys: bool = True) -> None:
        self.app = app  # the WSGI/ASGI target gunicorn loads (the benchmarks run other apps)
        self.root = root  # the tree (src/ and boot/) to run: another version's, for migration tests
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Keys reach the workers within KEYS_REFRESH_SECONDS: short here, so that the keys made
        # once the server is up (provision_keys) work at once; the revocation test sets 5.
        self.env = {**os.environ, "DATABASE_URL": database_url, "DB_SCHEMA": schema,
                    "PORT": str(self.port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": str(workers),
                    "PYTHONPATH": str(root / "src"), "ACCESS_LOG": "false", "KEYS_REFRESH_SECONDS": "0.5",
                    # The suite and the benchmarks send a lot from 127.0.0.1: limits on, and high
                    # enough not to get in their way; tests of the limits set their own.
                    **HIGH_RATE_LIMITS, **(env or {})}
        # API keys made for this server once its schema exists (keys=True): `headers` sends the
        # read key, as a dashboard would; `admin_headers` the admin key.
        self.keys = keys
        self.key: dict[str, str] = {}
        self.database_url = database_url  # as the test resolved it (env may name it another way)
        self.log_path = log_path or Path(f"/tmp/analytics-test-server-{self.port}.log")
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True, timeout: float = 60) -> "Server":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", str(self.root / "boot" / "gunicorn.conf.py"), self.app],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key['read']}"} if "read" in self.key else {}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key['admin']}"} if "admin" in self.key else {}

    def provision_keys(self) -> bool:
        """A read, an ingest and an admin key in the server's schema (once it has api_keys)."""
        sys.path.insert(0, str(SRC))
        from analytics.auth.keys import display_prefix, key_hash, new_key
        table = sql.Identifier(self.env["DB_SCHEMA"], "api_keys")  # any schema name, quoted
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass(%s) IS NULL", (table.as_string(conn),)).fetchone()[0]:
                return False  # another version of the service, without keys
            for scope in ("read", "ingest", "admin"):
                key = self.key.get(scope) or new_key()
                conn.execute(sql.SQL("INSERT INTO {} (name, prefix, key_hash, scope) VALUES (%s, %s, %s, %s) "
                                     "ON CONFLICT DO NOTHING").format(table),
                             (f"test-{scope}-{uuid.uuid4().hex[:8]}", display_prefix(key), key_hash(key), scope))
                self.key[scope] = key
        return True

    def wait_ready(self, timeout: float = 60, path: str = "/readyz") -> None:
        """Until `path` answers 200; for /readyz, from every worker (each says its pid), since a
        test that then locks a table must not catch a worker still creating its schema. With
        keys, the pids come from the admin answer: every worker then knows the keys too."""
        deadline = time.monotonic() + timeout
        ready_pids: set[int] = set()
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                # a new connection: any worker may take it
                r = httpx.get(self.url + path, timeout=2, headers=self.admin_headers)
                if r.status_code == 200:
                    body = r.json() if path == "/readyz" else {}
                    if path == "/readyz" and "process" not in body and self.keys:
                        # The anonymous answer: the schema is there, the keys are not (yet).
                        if "admin" not in self.key and not self.provision_keys():
                            return
                        time.sleep(0.05)
                        continue
                    pid = (body.get("writer") or {}).get("pid")
                    if pid is None:
                        return
                    ready_pids.add(pid)
                    if len(ready_pids) >= self.workers:
                        return
                    time.sleep(0.02)
                    continue
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready in {timeout}s (ready workers: {sorted(ready_pids)}):\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL the whole process group (master and workers) at once."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


class TcpProxy:
    """A loopback TCP proxy in front of the database. `cut()` drops every connection and
    refuses new ones, as a database outage would; `restore()` lets traffic through again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._up = threading.Event()
        self._up.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stop = False

    @classmethod
    def for_url(cls, url: str) -> "TcpProxy":
        d = conninfo_to_dict(url)
        return cls(d.get("host") or "127.0.0.1", int(d.get("port") or 5432))

    def url_through(self, url: str) -> str:
        d = conninfo_to_dict(url)
        d.update(host="127.0.0.1", port=str(self.port))
        d.pop("hostaddr", None)
        return make_conninfo(**d)

    def start(self) -> "TcpProxy":
        self._open_listener()
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def _open_listener(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(256)
        s.settimeout(0.2)
        self._listener = s

    def _accept_loop(self) -> None:
        while not self._stop:
            if not self._up.is_set() or self._listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self._up.clear()
        if self._listener is not None:
            self._listener.close()  # new connections are refused, as with a stopped server
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self._open_listener()
        self._up.set()

    def close(self) -> None:
        self._stop = True
        self.cut()
