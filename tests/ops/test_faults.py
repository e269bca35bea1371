"""Faults of the production topology, with real processes: nothing uploaded is ever lost.

Where a fault must strike in the middle of a batch, the test holds an uncommitted row
for one image of the batch: the worker commits the chunks before it, then waits on that
row's lock inside its upsert, and the test strikes exactly then. No sleeps, no timing.
"""

from contextlib import closing

from tests.builders import jpeg_bytes
from tests.ops.topology import AdminSession, wait_until

EMBED = "embeddings.tasks.embed_images"


def products(prefix: str, count: int, images_each: int = 1) -> list[dict]:
    return [
        {
            "sku": f"{prefix}{n}",
            "images": [{"kind": "jpeg", "seed": n * 10 + i} for i in range(images_each)],
        }
        for n in range(count)
    ]


def image_ids(seeded: dict) -> list[int]:
    return [image for product in seeded["products"] for image in product["images"]]


def embedding_rows(topology, ids: list[int]) -> dict[int, list[tuple]]:
    """image id -> its rows in any space: (space, has vector, error, updated)."""
    rows = topology.postgres.query(
        "SELECT image_id, space_id, vector IS NOT NULL, error, updated "
        "FROM embeddings_imageembedding WHERE image_id = ANY(%s) ORDER BY image_id",
        [ids],
    )
    found: dict[int, list[tuple]] = {image: [] for image in ids}
    for image, *row in rows:
        found[image].append(tuple(row))
    return found


def active_space(topology) -> int:
    return topology.postgres.query(
        "SELECT id FROM embeddings_embeddingspace WHERE status = 'active'"
    )[0][0]


def embedded(topology, ids: list[int]) -> set[int]:
    return {
        image
        for image, rows in embedding_rows(topology, ids).items()
        if any(has_vector for _, has_vector, _, _ in rows)
    }


def products_with_captions(topology) -> int:
    return topology.postgres.query(
        "SELECT count(DISTINCT product_id) FROM embeddings_captionembedding"
    )[0][0]


def backends_waiting_on_a_lock(topology) -> int:
    return topology.postgres.query(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    )[0][0]


def hold_row(topology, *, image: int, space: int):
    """An open transaction holding an uncommitted embedding row of `image`: upserts of it wait."""
    conn = topology.postgres.connect()
    conn.execute(
        "INSERT INTO embeddings_imageembedding (image_id, space_id, vector, source_sha256, "
        "error, updated) VALUES (%s, %s, NULL, '', 'held by the test', now())",
        [image, space],
    )
    return conn


def assert_one_vector_each(topology, ids: list[int], space: int) -> dict[int, tuple]:
    rows = embedding_rows(topology, ids)
    for image, image_rows in rows.items():
        assert len(image_rows) == 1, f"image {image}: {image_rows}"
        assert image_rows[0][:3] == (space, True, ""), f"image {image}: {image_rows}"
    return {image: image_rows[0] for image, image_rows in rows.items()}


def test_worker_killed_in_the_middle_of_a_batch(topology):
    seeded = topology.seed(products("KILL", 8))
    ids, space = image_ids(seeded), seeded["space"]
    # Redis hands an unacknowledged message to another worker after this many seconds.
    env = {"EMBED_BATCH_SIZE": 2, "CELERY_VISIBILITY_TIMEOUT": 5}
    with closing(hold_row(topology, image=ids[4], space=space)) as holder:
        doomed = topology.start_worker("doomed", **env)
        topology.send(EMBED, ids)
        # Chunks [0, 1] and [2, 3] are committed; chunk [4, 5] waits on the held row.
        wait_until(
            lambda: (
                embedded(topology, ids) == set(ids[:4]) and backends_waiting_on_a_lock(topology)
            ),
            timeout=120,
            what="the worker to commit two chunks and block on the third",
        )
        before = embedding_rows(topology, ids[:4])
        doomed.kill()
        holder.rollback()

    topology.start_worker("replacement", **env)
    wait_until(lambda: embedded(topology, ids) == set(ids), timeout=120, what="every vector")

    rows = assert_one_vector_each(topology, ids, space)
    # The late acknowledgement re-ran the task; what was done before was not done twice.
    assert {image: [rows[image]] for image in ids[:4]} == before


def test_uploads_survive_a_redis_outage(topology):
    password = "ops-staff-password"
    topology.create_staff("staff", password)
    web = topology.start_web()
    worker = topology.start_worker()
    # The sweep runs every 2 seconds here (every 5 minutes by default).
    beat = topology.start_beat(EMBED_SWEEP_INTERVAL=2)
    admin = AdminSession(web)
    assert admin.login("staff", password) == 302

    status, page = admin.add_product("UP-BEFORE", "Red linen shirt", [jpeg_bytes(seed=1)])
    assert status == 302, page[-2000:]
    before = [row[0] for row in topology.postgres.query("SELECT id FROM catalog_productimage")]
    wait_until(lambda: embedded(topology, before) == set(before), timeout=60, what="first upload")

    topology.redis.stop()
    status, health = web.get_json("/healthz")
    assert status == 200, health
    assert health["status"] == "degraded", health
    assert health["checks"]["broker"]["status"] == "error"
    for n in range(2):
        status, page = admin.add_product(
            f"UP-DURING-{n}", "Blue cotton dress", [jpeg_bytes(seed=n)]
        )
        assert status == 302, page[-2000:]  # saved, although nothing could be queued
    during = [
        row[0]
        for row in topology.postgres.query(
            "SELECT i.id FROM catalog_productimage i JOIN catalog_product p ON p.id = i.product_id "
            "WHERE p.sku LIKE %s",
            ["UP-DURING-%"],
        )
    ]
    assert len(during) == 2
    status, found = web.get_json("/api/search/?q=shirt")
    assert status == 200
    assert found["count"] == 1

    topology.redis.start()  # empty: whatever was queued before the outage is gone too
    wait_until(
        lambda: embedded(topology, during) == set(during) and products_with_captions(topology) == 3,
        timeout=120,
        what="the sweep to queue the lost images and captions",
    )
    assert_one_vector_each(topology, before + during, active_space(topology))
    assert worker.alive()
    assert beat.alive()
    assert web.process.alive()
    assert web.get_json("/healthz")[1]["status"] == "ok"


def test_worker_rides_out_a_postgres_restart(topology):
    seeded = topology.seed(products("PG", 6))
    ids, later, space = image_ids(seeded)[:4], image_ids(seeded)[4:], seeded["space"]
    with closing(hold_row(topology, image=ids[2], space=space)):
        worker = topology.start_worker(EMBED_BATCH_SIZE=2)
        topology.send(EMBED, ids)
        wait_until(
            lambda: (
                embedded(topology, ids) == set(ids[:2]) and backends_waiting_on_a_lock(topology)
            ),
            timeout=120,
            what="the worker to block inside its upsert",
        )
        # A restart ends every session, the worker's included, in the middle of its statement.
        topology.postgres.stop("fast")
    assert worker.alive()
    topology.postgres.start()

    # The task fails with a connection error, retries with backoff and finishes.
    wait_until(lambda: embedded(topology, ids) == set(ids), timeout=120, what="the retried task")
    # ... and the same worker process goes on with new work.
    topology.send(EMBED, later)
    wait_until(lambda: embedded(topology, later) == set(later), timeout=60, what="a new task")
    assert_one_vector_each(topology, ids + later, space)
    assert worker.alive()
    assert "OperationalError" in worker.output(tail=200_000)  # it did see the outage


def test_two_workers_embedding_the_same_images(topology):
    seeded = topology.seed(products("TWO", 6))
    ids, space = image_ids(seeded), seeded["space"]
    with closing(hold_row(topology, image=ids[0], space=space)) as holder:
        topology.start_workers(["first", "second"])
        results = [topology.send(EMBED, ids), topology.send(EMBED, ids)]
        # Both have encoded every image and wait in the same upsert: a true race.
        wait_until(
            lambda: backends_waiting_on_a_lock(topology) == 2,
            timeout=120,
            what="both workers to block in their upserts",
        )
        holder.rollback()
    reports = [result.get(timeout=120) for result in results]
    assert [report["embedded"] for report in reports] == [6, 6], reports
    assert_one_vector_each(topology, ids, space)


def test_poisoned_images_fail_alone(topology):
    kinds = ["jpeg", "truncated", "bomb", "lying", "jpeg"]
    seeded = topology.seed(
        [{"sku": "POISON", "images": [{"kind": kind, "seed": n} for n, kind in enumerate(kinds)]}]
        + products("AFTER-POISON", 1)
    )
    ids, later, space = image_ids(seeded)[:5], image_ids(seeded)[5:], seeded["space"]
    good, truncated, bomb, lying = ids[0], ids[1], ids[2], ids[3]
    worker = topology.start_worker()

    report = topology.send(EMBED, ids).get(timeout=120)
    assert report["embedded"] == 2
    assert set(report["failed"]) == {str(truncated), str(bomb), str(lying)}

    rows = {image: image_rows[0] for image, image_rows in embedding_rows(topology, ids).items()}
    assert rows[good][:3] == rows[ids[4]][:3] == (space, True, "")
    for image, reason in [
        (truncated, "corrupt or truncated"),
        (bomb, "over the limit"),
        (lying, "not a recognised image"),
    ]:
        assert rows[image][1] is False, rows[image]
        assert reason in rows[image][2], rows[image]

    # The same worker process goes on, and the sweep does not retry failures in a loop.
    topology.send(EMBED, later).get(timeout=60)
    assert embedded(topology, later) == set(later)
    sweep = topology.send("embeddings.tasks.sweep_missing_embeddings", queue="default")
    assert sweep.get(timeout=60)["images"] == 0
    assert worker.alive()
