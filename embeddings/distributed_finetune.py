"""Fine-tuning on several processes, GPUs or machines: torchrun's engine runs the workers.

`finetune_run_train` is what `finetune_clip` and the `train` task call. With one process it
is `finetune_run_execute`; with more, it starts them through `torch.distributed.run` (the
code behind `torchrun`: rendezvous, one worker per GPU or CPU slot, the agent that watches
them), each running this module:

    python -m embeddings.distributed_worker [--run-id N]

Rank 0 runs the whole of `finetune_run_execute` (pairs from the catalog, the active space's
evaluation, training, saving, calibration, promotion) with `finetune` under DDP as its
trainer; it hands the other ranks its model, examples and config once, and they train
beside it (`embeddings.training.distributed`). A rank that dies or raises fails the run: the
agent stops the others, and this process records which rank failed and how. Promotion is
the last thing rank 0 does, so a failed run leaves the active space as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import close_old_connections

from embeddings.finetuning import FinetuneError, FinetuneOptions, finetune_run_execute
from embeddings.models import FinetuneRun
from embeddings.spaces import space_active

if TYPE_CHECKING:  # the training modules import torch: where a rank trains, not before
    from embeddings.training import TrainResult
    from embeddings.training.distributed import World

logger = logging.getLogger(__name__)

WORKER_MODULE = "embeddings.distributed_worker"
_ENDPOINT = re.compile(r"^\[?[\w.:-]+\]?:\d{1,5}$")


@dataclass(frozen=True)
class Launch:
    """Where a run's processes are: `nproc` on each of `nnodes` machines; this is machine
    `node_rank`, and machine 0 listens for the others at `rdzv_endpoint` (HOST:PORT)."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""

    def __post_init__(self):
        if self.nproc < 1 or self.nnodes < 1:
            raise FinetuneError("--nproc and --nnodes must be at least 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise FinetuneError(f"--node-rank must be between 0 and {self.nnodes - 1}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise FinetuneError("a run on several machines needs --rdzv-endpoint HOST:PORT")
        if self.rdzv_endpoint and not _ENDPOINT.match(self.rdzv_endpoint):
            raise FinetuneError(
                f"--rdzv-endpoint must be HOST:PORT of machine 0, got {self.rdzv_endpoint!r}"
            )

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def torchrun_args(self, run_id: int | None) -> list[str]:
        """torchrun's command line for this machine's workers."""
        args = ["--nproc-per-node", str(self.nproc), "--nnodes", str(self.nnodes)]
        # A dead rank fails the run: training does not resume from the middle of an epoch.
        args += ["--max-restarts", "0"]
        if self.rdzv_endpoint:
            # Static rendezvous keeps --node-rank, so global rank 0 (which holds the run) is
            # the first process of machine 0, the machine that recorded the run.
            args += ["--rdzv-backend", "static", "--rdzv-endpoint", self.rdzv_endpoint]
            args += ["--node-rank", str(self.node_rank)]
        else:
            args += ["--standalone"]  # one machine: a free local port, nothing to configure
        args += ["-m", WORKER_MODULE]
        return args + (["--run-id", str(run_id)] if run_id is not None else [])


def finetune_run_train(
    *,
    run: FinetuneRun,
    launch: Launch | None = None,
    on_progress: Callable[[dict], None] | None = None,
) -> FinetuneRun:
    """Execute `run` in this process, or on `launch`'s processes (default: the run's
    `nproc` option, else FINETUNE_NPROC, on this machine)."""
    if launch is None:
        nproc = FinetuneOptions.from_dict(run.options).nproc
        try:
            launch = Launch(nproc=settings.FINETUNE_NPROC if nproc is None else nproc)
        except FinetuneError as exc:
            _run_failed(run, str(exc))
            raise
    if not launch.distributed:
        return finetune_run_execute(run=run, on_progress=on_progress)
    return finetune_run_execute_distributed(run=run, launch=launch)


def finetune_run_execute_distributed(
    *, run: FinetuneRun | None, launch: Launch
) -> FinetuneRun | None:
    """Start this machine's share of the run's processes and wait for all of them.

    On machine 0, `run` is the recorded run (rank 0 executes it); the other machines pass
    None and only train. A failure of any rank is recorded on the run (status failed, the
    rank and why) and raised as FinetuneError; the active space is left as it was.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    active = space_active() if run else None
    args = parse_args(launch.torchrun_args(run.pk if run else None))
    logger.info(
        "fine-tune run %s: %d of its %d processes start here",
        run.pk if run else "of machine 0",
        launch.nproc,
        launch.world_size,
    )
    try:
        with _launcher_process_state():
            torchrun(args)
    except ChildFailedError as exc:
        message = _failure_message(exc, launch.world_size)
        close_old_connections()
        if run:
            message += _active_space_note(active)
            _run_failed(run, message)
        raise FinetuneError(message) from None
    except BaseException as exc:  # rendezvous failed, or this process was interrupted
        if run:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            _run_failed(run, f"training stopped before it finished ({reason})")
        raise
    if run is None:
        return None
    close_old_connections()  # this process's connection sat idle for the whole training
    run.refresh_from_db()
    if run.status != FinetuneRun.Status.SUCCEEDED:  # rank 0 exited early without an error
        _run_failed(
            run, f"rank 0 of world size {launch.world_size} ended without finishing the run"
        )
        raise FinetuneError(run.error)
    return run


@contextlib.contextmanager
def _launcher_process_state() -> Iterator[None]:
    """torchrun's launcher sets OMP_NUM_THREADS and signal handlers for its own process;
    this process (a Celery worker, the web server) goes on afterwards, so both come back."""
    environ = dict(os.environ)
    # The workers import the project from where this process does, whatever their cwd.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(settings.BASE_DIR), environ.get("PYTHONPATH", "")) if p
    )
    handled = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT]
    handlers = {sig: signal.getsignal(sig) for sig in handled}
    try:
        yield
    finally:
        for key in set(os.environ) - set(environ):  # key by key: other threads read it
            del os.environ[key]
        for key, value in environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        with contextlib.suppress(ValueError):  # not the main thread: none were set
            for sig, handler in handlers.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


# What a rank reports when another rank vanished under it: a consequence, not the cause.
_PEER_LOST = re.compile(
    r"connection (closed|reset)|broken pipe|peer|NCCL (error|communicator)|timed out|"
    r"DistBackendError|SignalException|Signal 15",
    re.IGNORECASE,
)


def _failure_text(failure) -> str:
    """What a failed process said: its exception ("FinetuneError: too few pairs..."), from
    the error file `record` wrote, or torchrun's note for a process that wrote none."""
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    return str(message or "")


def _failure_message(exc, world_size: int) -> str:
    """Which rank failed first and how, from torchrun's report of the failed processes."""
    failures = exc.failures

    def cause_rank(rank: int) -> tuple[int, int, int]:
        failure = failures[rank]
        killed = failure.exitcode < 0 and failure.signal_name() != "SIGTERM"
        consequence = bool(_PEER_LOST.search(_failure_text(failure)))
        return (0 if killed else 1 if not consequence else 2, failure.timestamp, rank)

    rank = min(failures, key=cause_rank)
    failure = failures[rank]
    # A rank that raised can still be SIGTERMed while it exits: torchrun stops the others
    # as soon as any rank is gone, so the error it recorded says more than the signal.
    if isinstance(failure.error_file_data.get("message"), dict):  # what `record` wrote
        how = f"raised {_failure_text(failure)}"
    elif failure.exitcode < 0:
        how = f"was killed by {failure.signal_name()} (pid {failure.pid})"
    else:
        how = f"exited with code {failure.exitcode}"
    others = sorted(set(failures) - {rank})
    also = f" (then rank {', '.join(map(str, others))} stopped too)" if others else ""
    return f"fine-tuning failed: rank {rank} of world size {world_size} {how}{also}"


def _active_space_note(before) -> str:
    after = space_active()
    if before and after.pk == before.pk:
        return f"; the active space is still {after.name}"
    return f"; the active space is now {after.name}"


def _run_failed(run: FinetuneRun, message: str) -> None:
    """Record the failure: the run no longer counts as running, so another may start."""
    FinetuneRun.objects.filter(pk=run.pk).update(status=FinetuneRun.Status.FAILED, error=message)
    run.refresh_from_db()


# --- the worker: one rank ---------------------------------------------------------------


@dataclass
class TrainingJob:
    """What rank 0 hands the other ranks: `finetune`'s arguments, validation aside."""

    model: object
    preprocess: object
    tokenizer: object
    train: list
    config: object
    kwargs: dict


def main_rank_trainer(world: World) -> Callable[..., TrainResult]:
    """`finetune` for rank 0 of a run: hands the job to the other ranks, then trains with
    them (it alone validates)."""
    from embeddings.training import finetune
    from embeddings.training.distributed import broadcast_from_main

    def train(model, preprocess, tokenizer, train, val=(), config=None, progress=None, **kwargs):
        train = list(train)
        # On the CPU for the hand-over (each rank moves it to its own device); fp32 as
        # `finetune` trains it anyway.
        model = model.float().cpu()
        job = TrainingJob(model, preprocess, tokenizer, train, config, kwargs)
        broadcast_from_main(world, job)
        return finetune(
            model, preprocess, tokenizer, train, val, config, progress, world=world, **kwargs
        )

    return train


def _print_progress(world_size: int) -> Callable[[dict], None]:
    """Rank 0's progress on its standard output (torchrun passes it through)."""

    def on_event(event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            print(
                f"training on world size {world_size}: {event['train_pairs']} pairs an epoch, "
                f"batch {event['batch_size']} over all ranks, {event['total_steps']} steps "
                f"on {event['device']}",
                flush=True,
            )
        elif kind == "epoch":
            recall = (event.get("val") or {}).get("mean_recall")
            shown = f", validation mean recall {recall:.3f}" if recall is not None else ""
            print(f"epoch {event['epoch']}: loss {event['train_loss']:.3f}{shown}", flush=True)

    return on_event


def worker_main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.errors import record

    from embeddings.training.distributed import world_close, world_init

    parser = argparse.ArgumentParser(description="one rank of a distributed fine-tuning run")
    parser.add_argument("--run-id", type=int, help="the run to execute (machine 0 only)")
    args = parser.parse_args(argv)
    world = world_init(settings.CLIP_DEVICE)
    try:
        # `record` writes the error file before the group closes: closing it ends the other
        # ranks, and torchrun then stops this one, perhaps before it could say why it failed.
        record(_rank_main)(world, args.run_id)
    finally:
        world_close()


def _rank_main(world: World, run_id: int | None) -> None:
    from embeddings.training import finetune
    from embeddings.training.distributed import broadcast_from_main

    if world.is_main:
        if run_id is None:
            raise FinetuneError("rank 0 must run on machine 0 (--node-rank 0), with the run")
        finetune_run_execute(
            run=FinetuneRun.objects.get(pk=run_id),
            trainer=main_rank_trainer(world),
            on_progress=_print_progress(world.world_size),
        )
    else:
        job: TrainingJob = broadcast_from_main(world)
        finetune(
            job.model, job.preprocess, job.tokenizer, job.train, (), job.config,
            world=world, **job.kwargs,
        )  # fmt: skip
