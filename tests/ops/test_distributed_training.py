"""Fine-tuning on two processes (torchrun, DDP over gloo on the CPU), as real processes.

`finetune_clip --nproc 2` against the ops database: the same run as one process (same
batches, same steps), so the same recall, and a checkpoint the encoder loads after its
sha256 check; a rank SIGKILLed in the middle of training, or one that raises, fails the
run, names the rank, and leaves the active space and the one-run rule as they were.
"""

import io
import json
import signal
import sys

import psutil
import pytest
from PIL import Image

from embeddings.admin import training_report
from embeddings.encoder import ClipEncoder, ModelSpec
from tests.builders import jpeg_bytes
from tests.ops.topology import Process, free_port, wait_until

# A small shop, a quarter of it for validation; shop-micro (a 32-d ViT) trains in seconds.
# At 3e-3 it collapsed to the uniform loss (ln 16) on some splits and learned nothing.
SHOP = {"FINETUNE_VAL_FRACTION": "0.25"}
TRAIN = ["--scratch", "--architecture", "shop-micro", "--batch-size", "16", "--lr", "1e-3"]


@pytest.fixture
def demo_shop(topology):
    topology.manage("load_demo_catalog", "--products", "48", "--no-embed", "--verbosity", "0")
    return topology


def space_row(topology, name: str) -> dict:
    row = topology.postgres.query(
        "SELECT architecture, checkpoint, checkpoint_sha256, status, metrics "
        "FROM embeddings_embeddingspace WHERE name = %s",
        [name],
    )[0]
    columns = ["architecture", "checkpoint", "sha256", "status", "metrics"]
    return dict(zip(columns, row, strict=True))


def active_space(topology) -> tuple:
    return topology.postgres.query(
        "SELECT id, name FROM embeddings_embeddingspace WHERE status = 'active'"
    )[0]


def summary_line(output: str) -> str:
    """The command's line on how it trained ("... pairs/s on cpu, world size 2")."""
    return next(line for line in output.splitlines() if " pairs/s on " in line)


def test_two_processes_train_the_run_of_one(demo_shop):
    before = active_space(demo_shop)
    # 8 epochs: the demo's colour variants (one title, several photos) made 4 too few to
    # beat the random start on 12 validation products.
    common = [*TRAIN, "--epochs", "8", "--no-promote"]
    demo_shop.manage("finetune_clip", *common, "--name", "one", timeout=600, **SHOP)
    out = demo_shop.manage(
        "finetune_clip", *common, "--nproc", "2", "--name", "two", timeout=600, **SHOP
    )
    assert "training on world size 2" in out  # rank 0's own progress lines
    assert "world size 2" in summary_line(out)  # the command's summary

    one, two = space_row(demo_shop, "one"), space_row(demo_shop, "two")
    assert one["metrics"]["training"]["world_size"] == 1
    assert two["metrics"]["training"]["world_size"] == 2
    # Same batches, seeds and schedule: the same steps, and the same model up to rounding.
    assert two["metrics"]["training"]["steps"] == one["metrics"]["training"]["steps"]
    after = one["metrics"]["after"]["mean_recall"], two["metrics"]["after"]["mean_recall"]
    assert after[1] == pytest.approx(after[0], abs=0.05)
    assert two["metrics"]["after"]["mean_recall"] > two["metrics"]["before"]["mean_recall"]
    losses = one["metrics"]["losses"], two["metrics"]["losses"]
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-3)  # the first batch...
    assert losses[1][-1] == pytest.approx(losses[0][-1], rel=0.05)  # ...and the last one

    # Saved by rank 0 as safetensors; the encoder's load path checks its sha256.
    encoder = ClipEncoder(
        ModelSpec(
            two["architecture"], checkpoint=two["checkpoint"], checkpoint_sha256=two["sha256"]
        ),
        device="cpu",
    )
    image = Image.open(io.BytesIO(jpeg_bytes((220, 20, 20))))
    assert encoder.encode_images([image]).shape == (1, 32)
    assert two["status"] == "candidate"
    assert active_space(demo_shop) == before
    assert "world size 2" in training_report(two["metrics"])  # the run's page in the admin


def test_a_killed_rank_fails_the_run_and_changes_nothing(demo_shop):
    before = active_space(demo_shop)
    args = [*TRAIN, "--epochs", "1000", "--margin", "-1", "--nproc", "2", "--name", "doomed"]
    command = Process(
        "finetune",
        [sys.executable, "manage.py", "finetune_clip", *args],
        env=demo_shop.env(**SHOP),
        log=demo_shop.workdir / "finetune.log",
    )

    def training_step():
        rows = demo_shop.postgres.query(
            "SELECT id, progress FROM embeddings_finetunerun WHERE status = 'running'"
        )
        # A step is stored at most every 2 s, an epoch's end always: short epochs show only
        # epochs.
        progress = (rows[0][1] or {}) if rows else {}
        return (progress.get("step") or progress.get("epoch")) and rows[0][0]

    try:
        run_id = wait_until(training_step, timeout=600, what="the run to be training")
    except TimeoutError:
        command.stop()
        raise AssertionError(f"the run never trained:\n{command.output()}") from None

    def rank(number: int):
        for child in psutil.Process(command.popen.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(number):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    ranks = wait_until(
        lambda: (rank(0), rank(1)) if rank(0) and rank(1) else None, timeout=10, what="the ranks"
    )
    ranks[1].send_signal(signal.SIGKILL)
    try:
        command.popen.wait(timeout=120)
        # No rank outlives the run: torchrun's agent stopped rank 0 when rank 1 died.
        rank_0_gone = not ranks[0].is_running() or ranks[0].status() == psutil.STATUS_ZOMBIE
    finally:
        command.stop()
    assert rank_0_gone
    assert command.popen.returncode != 0
    output = command.output()
    assert "rank 1 of world size 2 was killed by SIGKILL" in output

    status, error = demo_shop.postgres.query(
        "SELECT status, error FROM embeddings_finetunerun WHERE id = %s", [run_id]
    )[0]
    assert status == "failed"
    assert "rank 1 of world size 2 was killed by SIGKILL" in error
    assert f"the active space is still {before[1]}" in error
    assert active_space(demo_shop) == before
    assert not demo_shop.postgres.query(
        "SELECT 1 FROM embeddings_embeddingspace WHERE name = 'doomed'"
    )
    # The next run may start.
    assert not demo_shop.postgres.query(
        "SELECT id FROM embeddings_finetunerun WHERE status IN ('queued', 'running')"
    )


def test_a_rank_that_raises_fails_the_train_task_with_its_error(topology):
    # The admin button's path: a run with `nproc` 2 on the `train` queue, in a real worker.
    # The shop is empty, so rank 0 finds too few pairs and raises before anything trains.
    before = active_space(topology)
    options = {"scratch": True, "architecture": "shop-micro", "epochs": 1, "nproc": 2}
    (run_id,), *_ = topology.postgres.query(
        "INSERT INTO embeddings_finetunerun (status, options, progress, result, error, created, "
        "updated) VALUES ('queued', %s, '{}', '{}', '', now(), now()) RETURNING id",
        [json.dumps(options)],
    )
    topology.start_worker(queues="train")
    task = topology.send("embeddings.tasks.finetune_catalog", run_id, queue="train")
    task.get(timeout=300, propagate=False)  # the task ends once every rank has
    assert task.failed()
    (status, error), *_ = topology.postgres.query(
        "SELECT status, error FROM embeddings_finetunerun WHERE id = %s", [run_id]
    )
    assert status == "failed"
    assert "rank 0 of world size 2 raised FinetuneError: too few pairs to train on" in error
    assert f"the active space is still {before[1]}" in error
    assert active_space(topology) == before


def test_two_machines_meet_at_the_rendezvous_endpoint(demo_shop):
    # Two "machines" of one process each on this host, as README's multi-node example.
    machines = ["--nproc", "1", "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    other = Process(
        "machine-1",
        [sys.executable, "manage.py", "finetune_clip", *machines, "--node-rank", "1"],
        env=demo_shop.env(**SHOP),
        log=demo_shop.workdir / "machine-1.log",
    )
    try:
        out = demo_shop.manage(
            "finetune_clip", *TRAIN, "--epochs", "2", "--no-promote", "--name", "machines",
            *machines, "--node-rank", "0", timeout=600, **SHOP,
        )  # fmt: skip
        other.popen.wait(timeout=120)
    finally:
        other.stop()  # whatever happened, nothing of it outlives the test
    assert other.popen.returncode == 0
    assert "machine 1: its 1 process trained in world size 2" in other.output()
    assert "world size 2" in summary_line(out)
    assert space_row(demo_shop, "machines")["metrics"]["training"]["world_size"] == 2
