"""Load benchmark of text search on the production process topology (not a test).

    .venv/bin/python bench/load.py [--clients 8] [--seconds 20] [--products 500]

Starts private Redis and PostgreSQL + pgvector, fills the demo catalog with vectors, runs
gunicorn with the production settings, then drives `GET /api/search/?q=...` on localhost:
first one client (the baseline: latency without contention), then --clients concurrent
clients (each its own process and keep-alive connection) for --seconds each. Prints
requests per second, p50/p99 latency and the error count, which must be 0 (exit 1 if not).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ops.topology import PostgresServer, RedisServer, Topology  # noqa: E402

QUERIES = [
    "red dress", "blue shirt", "black leather jacket", "white sneakers", "striped t-shirt",
    "wool scarf", "summer dress", "denim jeans", "running shoes", "green hoodie", "silk blouse",
    "yellow raincoat", "cotton socks", "linen trousers", "grey sweater", "pink skirt",
    "红色连衣裙", "蓝色衬衫", "黑色皮夹克", "白色运动鞋", "条纹T恤", "羊毛围巾",
]  # fmt: skip


def client(port: int, seconds: float, offset: int, results: multiprocessing.Queue) -> None:
    """One shopper: queries back to back on one keep-alive connection for `seconds`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, errors, n = [], 0, offset
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        query = urllib.parse.quote(QUERIES[n % len(QUERIES)])
        n += 1
        started = time.perf_counter()
        try:
            connection.request("GET", f"/api/search/?q={query}&limit=20")
            response = connection.getresponse()
            body = response.read()
            ok = response.status == 200 and "results" in json.loads(body)
        except (OSError, http.client.HTTPException, ValueError):
            ok = False
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies.append(time.perf_counter() - started)
        errors += not ok
    results.put((latencies, errors))


def drive(port: int, clients: int, seconds: float) -> dict:
    results: multiprocessing.Queue = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=client, args=(port, seconds, i * 7, results))
        for i in range(clients)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    collected = [results.get(timeout=seconds + 120) for _ in processes]
    elapsed = time.monotonic() - started
    for process in processes:
        process.join()
    latencies = sorted(x for batch, _ in collected for x in batch)
    return {
        "clients": clients,
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": sum(errors for _, errors in collected),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn process")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.products < 1:
        parser.error("--clients, --seconds and --products must be positive")

    workdir = Path(tempfile.mkdtemp(prefix="shop-load-", dir="/tmp"))
    redis = RedisServer(workdir / "redis")
    postgres = None
    topology = None
    try:
        redis.start()
        postgres = PostgresServer(workdir / "pg")
        topology = Topology(workdir=workdir, redis=redis, postgres=postgres)
        print(f"preparing: {args.products} demo products with vectors...", flush=True)
        topology.manage("migrate", "--no-input", "--verbosity", "0")
        topology.manage(
            "load_demo_catalog", "--products", str(args.products), "--no-embed", "--verbosity", "0"
        )
        topology.manage("reindex_embeddings", "--missing-only", "--verbosity", "0", timeout=1800)
        web = topology.start_web(workers=args.web_workers, GUNICORN_THREADS=args.threads)
        # Every gunicorn process loads the model on its first search: warm them all up.
        drive(web.port, args.web_workers * args.threads, 2)

        baseline = drive(web.port, 1, args.seconds)
        loaded = drive(web.port, args.clients, args.seconds)
    finally:
        if topology:
            topology.stop_all()
        redis.stop()
        if postgres:
            postgres.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"GET /api/search/ on gunicorn ({args.web_workers} processes x {args.threads} threads, "
        f"production settings), {args.products} products, {args.seconds:.0f} s per run"
    )
    for name, run in (("1 client (baseline)", baseline), (f"{args.clients} clients", loaded)):
        print(
            f"  {name:>20}: {run['rps']:7.1f} req/s  p50 {run['p50_ms']:6.1f} ms  "
            f"p99 {run['p99_ms']:6.1f} ms  errors {run['errors']} / {run['requests']}"
        )
    ratio = loaded["rps"] / baseline["rps"]
    print(f"  throughput ratio {args.clients} clients / 1 client: {ratio:.2f}")
    return 1 if baseline["errors"] or loaded["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
