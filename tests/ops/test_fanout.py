"""Fanned-out re-embedding with real processes: two Celery workers on a real Redis share
the chunks of `reindex_embeddings`, and one SIGKILLed in the middle of a chunk loses nothing.

As in test_faults.py, the test holds an uncommitted row for one image of a chunk: the
worker of that chunk commits its first batch, then waits on the row's lock inside its
upsert, and the test kills it exactly then. No sleeps, no timing.
"""

import sys
from contextlib import closing

from tests.ops.test_faults import (
    assert_one_vector_each,
    backends_waiting_on_a_lock,
    embedded,
    embedding_rows,
    hold_row,
    image_ids,
    products,
    products_with_captions,
)
from tests.ops.topology import wait_until


def chunk_rows(topology) -> list[tuple]:
    return topology.postgres.query(
        "SELECT kind, first_id, last_id, status, attempts, claimed_by "
        "FROM embeddings_reindexchunk ORDER BY id"
    )


def test_two_workers_share_a_reindex_and_a_killed_one_loses_nothing(topology):
    seeded = topology.seed(products("FAN", 12))
    ids, space = image_ids(seeded), seeded["space"]
    # Chunks of 4 ids in batches of 2; a claim older than 12 s is a dead worker's.
    env = {"EMBED_BATCH_SIZE": 2, "REINDEX_STALE_SECONDS": 12, "REINDEX_POLL_SECONDS": 0.3}
    chunk, held = ids[4:8], ids[6]  # the second chunk; its second batch waits on the row
    with closing(hold_row(topology, image=held, space=space)) as holder:
        # The command plans and queues while the workers start.
        command = topology._start(
            "reindex",
            [sys.executable, "manage.py", "reindex_embeddings", "--chunk-size", "4"],
            **env,
        )
        workers = topology.start_workers(["first", "second"], queues="embed", **env)

        def blocked_worker():
            claims = [
                claimed_by
                for kind, first, last, status, _, claimed_by in chunk_rows(topology)
                if kind == "images" and first <= held <= last and status == "running"
            ]
            if (
                claims
                and embedded(topology, chunk) == set(chunk[:2])
                and backends_waiting_on_a_lock(topology)
            ):
                return claims[0]
            return None

        claimed_by = wait_until(
            blocked_worker, timeout=180, what="a worker to commit a batch and block on the next"
        )
        before = embedding_rows(topology, chunk[:2])
        victim = next(w for w in workers if claimed_by.startswith(f"{w.name}@"))
        victim.kill()
        holder.rollback()

    # The command re-queues the dead worker's chunk once its claim is stale; the other
    # worker takes it over, and the command exits when every chunk is done.
    assert command.popen.wait(timeout=240) == 0, command.output()
    output = command.output(tail=20_000)
    assert "queued on the embed queue" in output
    assert "re-queued 1 chunk(s)" in output, output
    # 12 images and 12 titles, less the killed worker's committed batch: kept, not redone.
    assert "22 vectors computed, 2 up to date" in output, output

    rows = assert_one_vector_each(topology, ids, space)
    # What the killed worker had committed was kept, not written a second time.
    assert {image: [rows[image]] for image in chunk[:2]} == before
    assert products_with_captions(topology) == 12
    chunks = chunk_rows(topology)
    assert len(chunks) == 6  # 3 of images, 3 of captions
    assert {status for _, _, _, status, _, _ in chunks} == {"done"}
    survivor = next(w for w in workers if w is not victim)
    (taken_over,) = [row for row in chunks if row[0] == "images" and row[1] <= held <= row[2]]
    assert taken_over[4] == 2, taken_over  # attempts: the killed worker's, the survivor's
    assert taken_over[5].startswith(f"{survivor.name}@"), taken_over
    assert survivor.alive()
