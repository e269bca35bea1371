"""The production topology itself: web, worker and beat as processes; compose; deploy checks."""

import json
import os
import shutil
import subprocess
import sys

import yaml

from tests.ops.topology import ROOT, RedisServer, wait_until


def test_stack_embeds_serves_and_reports_health(topology):
    """Catalog rows that no one queued (a lost message) are swept, embedded and searchable."""
    topology.seed([{"sku": f"STACK{n}", "images": [{"seed": n}]} for n in range(3)])
    web = topology.start_web()
    worker = topology.start_worker()
    beat = topology.start_beat(EMBED_SWEEP_INTERVAL=1)

    def found():
        status, body = web.get_json("/api/search/?q=red+shirt&limit=10")
        assert status == 200, body
        # Every embedded product is in the window: the nearest as matches, the rest related.
        return len(body["results"]) == 3 and body

    body = wait_until(
        found, timeout=120, interval=0.5, what="the sweep to get every product embedded"
    )
    assert {hit["sku"] for hit in body["results"]} == {"STACK0", "STACK1", "STACK2"}

    status, health = web.get_json("/healthz")
    assert status == 200, health
    assert health["status"] == "ok", health
    assert set(health["checks"]) == {"database", "broker", "space", "replicas"}
    assert health["checks"]["space"]["detail"] == body["space"]

    # Without its database the web process is out of service, and says why.
    topology.postgres.stop("fast")
    try:
        status, health = web.get_json("/healthz")
    finally:
        topology.postgres.start()
    assert status == 503, health
    assert health["status"] == "error", health
    assert health["checks"]["database"]["status"] == "error"
    assert web.wait_healthy()["status"] == "ok"  # and back once it returns

    # Structured logs: every line each process wrote is one JSON object.
    for process in (web.process, worker, beat):
        lines = [line for line in process.output(tail=10**7).splitlines() if line.strip()]
        assert lines, f"{process.name} logged nothing"
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"{process.name} logged a non-JSON line: {line!r}") from None
            assert {"time", "level", "logger", "message"} <= set(entry), line
    access = [json.loads(line) for line in web.process.output(tail=10**7).splitlines()]
    assert any(e.get("request", "").startswith("GET /api/search/") for e in access)


def test_sweep_waits_while_embed_tasks_are_queued(topology):
    seeded = topology.seed([{"sku": "BACKLOG", "images": [{"seed": 1}]}])
    image = seeded["products"][0]["images"][0]
    # A worker of the default queue only: the embed task stays queued, as in a backlog.
    topology.start_worker(queues="default")
    topology.send("embeddings.tasks.embed_images", [image])
    sweep = topology.send("embeddings.tasks.sweep_missing_embeddings", queue="default")
    assert sweep.get(timeout=60) == {"skipped": 1}

    topology.redis.command("DEL", "embed")  # the backlog is lost: now the sweep queues it
    sweep = topology.send("embeddings.tasks.sweep_missing_embeddings", queue="default")
    assert sweep.get(timeout=60) == {"images": 1, "products": 1}
    assert topology.redis.command("LLEN", "embed").strip() == b":2"  # images + captions


def production_env(**env) -> dict:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="shop_search.settings.production",
        DJANGO_SECRET_KEY="x" * 30 + "-long-random-production-secret",
        DJANGO_ALLOWED_HOSTS="shop.example",
        # Parsed, never connected to: `check --deploy` needs no database.
        DATABASE_URL="postgres://shop@db.invalid:5432/shop_search",
        CELERY_BROKER_URL="redis://redis.invalid:6379/0",
        **env,
    )
    return environment


def start_check_deploy(**env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=production_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_check_deploy_passes_under_production_settings():
    configured = start_check_deploy()
    # The check is not a formality: turning the HTTPS redirect off is caught.
    without_redirect = start_check_deploy(DJANGO_SECURE_SSL_REDIRECT="0")
    # And settings of this issue refuse bad values with a clear message.
    bad_log_format = start_check_deploy(LOG_FORMAT="xml")
    bad_rate = start_check_deploy(API_ANON_RATE="lots")
    output = configured.communicate(timeout=120)[0]
    assert configured.returncode == 0, output
    assert "security." not in output, output
    assert "security.W008" in without_redirect.communicate(timeout=120)[0]
    assert "LOG_FORMAT must be 'json' or 'plain'" in bad_log_format.communicate(timeout=120)[0]
    assert "API_ANON_RATE must look like 120/min" in bad_rate.communicate(timeout=120)[0]
    assert bad_log_format.returncode != 0
    assert bad_rate.returncode != 0


def compose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is missing: ./bin/test installs Debian's package"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [executable, "-f", str(ROOT / "docker" / "compose.yaml"), *args],
        cwd=ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_is_valid_and_complete():
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr

    result = compose("--env-file", str(ROOT / "docker" / ".env.example"), "config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"db", "redis", "migrate", "web", "worker", "beat", "proxy"} <= set(services)
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    for name in ("db", "redis", "web", "worker", "beat"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert "gunicorn" in " ".join(services["web"]["command"])

    worker = services["worker"]
    command = " ".join(worker["command"])
    assert "-Q embed,train" in command
    assert "--concurrency 1" in command
    assert "--prefetch-multiplier 1" in command
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "beat" in " ".join(services["beat"]["command"])

    # One image, differing by command; the GPU worker is the same Dockerfile with CUDA torch.
    assert {services[name]["build"]["dockerfile"] for name in ("web", "worker", "beat")} == {
        "docker/Dockerfile"
    }
    assert worker["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    # Named volumes: the database, uploaded photos, downloaded and trained models.
    mounts = {
        name: {volume.split(":")[0] for volume in services[name].get("volumes", [])}
        for name in services
    }
    assert "db-data" in mounts["db"]
    assert {"media", "models", "model-cache"} <= mounts["web"] & mounts["worker"]
    assert {"db-data", "media", "models", "model-cache"} <= set(config["volumes"])


def test_compose_has_a_streaming_replica_that_serves_searches(tmp_path):
    """db-replica copies db (pg_basebackup -R, through a slot) and web searches on it."""
    from urllib.parse import urlparse

    config = yaml.safe_load(
        compose("--env-file", str(ROOT / "docker" / ".env.example"), "config").stdout
    )
    services = config["services"]
    db, replica = services["db"], services["db-replica"]
    assert replica["image"] == db["image"]  # the same Postgres major and pgvector
    script = " ".join(replica["command"])
    assert "pg_basebackup -h db" in script
    assert " -R " in script
    assert "-S db_replica" in script
    assert "db-replica-data" in {volume.split(":")[0] for volume in replica["volumes"]}
    assert replica["depends_on"]["db"]["condition"] == "service_healthy"
    assert "healthcheck" in replica
    # db bounds what the slot of a replica gone for good keeps, and lets the replica in.
    assert "max_slot_wal_keep_size" in " ".join(db["command"])
    (init,) = [volume for volume in db["volumes"] if "docker-entrypoint-initdb.d" in volume]
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("local all all trust\n")
    subprocess.run(
        ["sh", init.split(":")[0]],
        env={"PGDATA": str(tmp_path), "POSTGRES_USER": "shop"},
        check=True,
    )
    assert hba.read_text().splitlines()[-1].split() == [
        "host",
        "replication",
        "shop",
        "all",
        "scram-sha-256",
    ]
    web = services["web"]["environment"]
    (url,) = web["DATABASE_REPLICA_URLS"].split(",")
    assert urlparse(url).hostname == "db-replica"
    assert urlparse(url).path == urlparse(web["DATABASE_URL"]).path
    assert float(web["DATABASE_REPLICA_MAX_LAG_SECONDS"]) > 0


def test_the_cache_is_a_bounded_redis_that_evicts_while_the_broker_never_does(tmp_path):
    from urllib.parse import urlparse

    import redis as redis_py

    config = yaml.safe_load(
        compose("--env-file", str(ROOT / "docker" / ".env.example"), "config").stdout
    )
    services = config["services"]
    environment = services["web"]["environment"]
    cache_host = urlparse(environment["CACHE_URL"]).hostname
    broker_host = urlparse(environment["CELERY_BROKER_URL"]).hostname
    assert cache_host != broker_host, "query vectors would fill the broker's memory"
    assert int(environment["SEARCH_QUERY_CACHE_SECONDS"]) <= 86400

    def fill(service: str) -> dict:
        """Write 4 MB of query vectors (2 KB each, with their TTL) into a 1 MB Redis."""
        server = RedisServer(tmp_path / service)
        server.start(extra_args=[*services[service]["command"][1:], "--maxmemory", "1mb"])
        try:
            client = redis_py.Redis(port=server.port)
            errors = 0
            for n in range(2000):
                try:
                    client.set(f"search:qv:{n}", b"\x00" * 2048, ex=3600)
                except redis_py.exceptions.ResponseError:  # OOM: the write is refused
                    errors += 1
            info = client.info()
            return {"refused": errors, "evicted": info["evicted_keys"], **client.config_get()}
        finally:
            server.stop()

    cache = fill(cache_host)
    assert cache["maxmemory-policy"] == "allkeys-lru"
    assert cache["refused"] == 0
    assert cache["evicted"] > 1000
    assert cache["appendonly"] == "no"
    assert cache["save"] == ""
    broker = fill(broker_host)
    assert broker["maxmemory-policy"] == "noeviction"  # a task is never dropped...
    assert broker["refused"] > 1000  # ...so a broker shared with the cache would refuse them
