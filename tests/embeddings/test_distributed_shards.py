"""The pieces of distributed fine-tuning that need no second process: each rank's share of a
batch, and the command's refusals of a world that cannot be (the ops tests run real ranks)."""

import signal

import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command

from embeddings.distributed_finetune import _failure_message
from embeddings.encoder import ClipEncoder, ModelSpec
from embeddings.finetuning import FinetuneError
from embeddings.training.data import batch_tensors, epoch_batches, epoch_pairs, prepare_examples
from embeddings.training.distributed import BatchShard, World
from tests.builders import COLOURS, jpeg_bytes


def test_the_ranks_shares_make_up_the_batch_of_one_process():
    encoder = ClipEncoder(ModelSpec("shop-micro"), device="cpu")
    examples = [
        (p, f"{word} striped cotton shirt number {p}", jpeg_bytes(COLOURS[p % 8], seed=p))
        for p in range(10)
        for word in ("red", "blue")
    ]
    data = prepare_examples(examples, encoder.preprocess, encoder.tokenizer, cache_images=True)
    batch = epoch_batches(data.text_product, 7, np.random.default_rng(0))[0]

    def tensors(positions):
        rng = np.random.default_rng(1)  # every rank's generator, in step
        pairs = epoch_pairs(data, rng, hflip=True)
        return batch_tensors(
            data, batch, pairs, encoder.preprocess, encoder.tokenizer, 0.5, rng,
            torch.device("cpu"), positions=positions,
        )  # fmt: skip

    whole_pixels, whole_tokens = tensors(None)
    shares = [BatchShard(World(rank, 2, rank, torch.device("cpu")))(batch) for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 3  # 7 pairs: one left out, ranks gather alike
    assert not set(shares[0]) & set(shares[1])
    for positions in shares:
        pixels, tokens = tensors(positions)
        assert torch.equal(pixels, whole_pixels[positions])
        assert torch.equal(tokens, whole_tokens[positions])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nproc": 0}, "--nproc and --nnodes must be at least 1"),
        ({"nproc": 2, "nnodes": 2}, "needs --rdzv-endpoint HOST:PORT"),
        ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"}, "between 0 and 1"),
        ({"nnodes": 2, "rdzv_endpoint": "no port"}, "must be HOST:PORT of machine 0"),
    ],
)
def test_finetune_command_refuses_a_world_that_cannot_be(options, message):
    with pytest.raises(CommandError, match=message):
        call_command("finetune_clip", **options)


def test_a_rank_that_raised_and_was_then_stopped_is_reported_by_its_error(tmp_path, monkeypatch):
    # torchrun SIGTERMs the ranks still alive once one is gone; the rank that raised first
    # may still be exiting then (CI saw it). Its recorded error is the cause, not the signal.
    from torch.distributed.elastic.multiprocessing.errors import (
        ChildFailedError,
        ErrorHandler,
        ProcessFailure,
    )

    def failure(rank, exitcode, error=None):
        error_file = tmp_path / f"rank{rank}-exit{exitcode}.json"
        if error is not None:
            monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
            ErrorHandler().record_exception(error)
        return ProcessFailure(rank, pid=1000 + rank, exitcode=exitcode, error_file=str(error_file))

    failures = {
        0: failure(0, -signal.SIGTERM, FinetuneError("too few pairs to train on")),
        1: failure(1, 1, RuntimeError("Connection closed by peer [127.0.0.1]:17299")),
    }
    message = _failure_message(ChildFailedError("worker", failures), world_size=2)
    assert message == (
        "fine-tuning failed: rank 0 of world size 2 raised FinetuneError: too few pairs to "
        "train on (then rank 1 stopped too)"
    )
    failures[0] = failure(0, -signal.SIGKILL)  # killed outright: no error file, the signal says it
    message = _failure_message(ChildFailedError("worker", failures), world_size=2)
    assert message.startswith("fine-tuning failed: rank 0 of world size 2 was killed by SIGKILL")
