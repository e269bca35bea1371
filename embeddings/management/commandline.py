"""What the embeddings commands share: finding a space by name or a model by its spec,
printing Recall@K tables, reading pair files with a progress bar and reporting bad lines."""

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from django.core.management.base import CommandError
from tqdm import tqdm

from embeddings.encoder import CheckpointError, ClipEncoder, ModelSpec, get_encoder
from embeddings.models import EmbeddingSpace
from embeddings.pairfiles import BadLine, PairFileReport
from embeddings.spaces import NoActiveSpace, space_active, space_encoder


def space_by_name(name: str | None) -> EmbeddingSpace:
    """The space named `name`, or the active one when no name is given; else a CommandError."""
    if not name:
        try:
            return space_active()
        except NoActiveSpace as exc:
            raise CommandError(str(exc)) from None
    try:
        return EmbeddingSpace.objects.get(name=name)
    except EmbeddingSpace.DoesNotExist:
        names = ", ".join(EmbeddingSpace.objects.values_list("name", flat=True)) or "none"
        raise CommandError(f"no embedding space named {name!r} (spaces: {names})") from None


def print_metrics(stdout, rows: dict[str, dict]) -> None:
    """A Recall@K table, one row per model, the way retrieval papers report it."""
    keys = ["t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mean_recall"]
    width = max(len(name) for name in rows) + 2
    stdout.write(f"{'':{width}}" + "".join(f"{k:>12}" for k in keys))
    for name, metrics in rows.items():
        stdout.write(f"{name:{width}}" + "".join(f"{metrics.get(k, 0):>12.3f}" for k in keys))


# --- which model: a space, or an open_clip architecture with its weights ------------------


def add_model_arguments(parser) -> None:
    group = parser.add_argument_group("model (default: the active space)")
    group.add_argument("--space", help="name of the space")
    group.add_argument(
        "--model",
        metavar="ARCH",
        help="an open_clip architecture instead of a space (ViT-B-32, shop-tiny...); "
        "with neither --pretrained nor --checkpoint, its fixed-seed random init",
    )
    weights = group.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", metavar="TAG", help="open_clip pretrained tag (model hub)")
    weights.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="local weights: ours (safetensors) or open_clip_train's epoch_N.pt",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="pairs encoded at a time")


def encoder_from_options(options: dict) -> tuple[str, ClipEncoder]:
    """(a label for reports, the process-wide encoder) for `add_model_arguments`' options."""
    if options["batch_size"] < 1:
        raise CommandError("--batch-size must be at least 1")
    architecture = options["model"]
    if not architecture:
        if options["pretrained"] or options["checkpoint"]:
            raise CommandError("--pretrained and --checkpoint go with --model ARCH")
        space = space_by_name(options["space"])
        try:
            return space.name, space_encoder(space)
        except CheckpointError as exc:
            raise CommandError(str(exc)) from exc
    if options["space"]:
        raise CommandError("give --space or --model, not both")
    spec = ModelSpec(
        architecture, pretrained=options["pretrained"] or "", checkpoint=options["checkpoint"] or ""
    )
    weights = spec.pretrained or spec.checkpoint or f"random-seed{spec.seed}"
    try:
        return f"{architecture}@{weights}", get_encoder(spec, device=settings.CLIP_DEVICE or None)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from exc
    except RuntimeError as exc:  # open_clip's "Model config for X not found", hub errors
        raise CommandError(f"cannot load {architecture}@{weights}: {exc}") from exc


# --- pair files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PairFileFeedback:
    progress: Callable[[int], None]  # bytes read so far: moves the bar
    on_bad_line: Callable[[BadLine], None]  # "FILE:LINE: reason" on stderr


@contextmanager
def pair_file_reading(
    path: str, *, desc: str, stderr, verbosity: int
) -> Iterator[tuple[IO[bytes], PairFileFeedback]]:
    """The pair file open for reading, a progress bar in bytes on the terminal's stderr,
    and a reporter of bad lines to `stderr` that does not break the bar."""
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise CommandError(f"cannot read {path}: no such readable file")
    with (
        open(path, "rb") as stream,
        tqdm(
            total=os.fstat(stream.fileno()).st_size,
            desc=desc,
            unit="B",
            unit_scale=True,
            file=sys.stderr,
            disable=verbosity == 0,
        ) as bar,
    ):

        def on_bad_line(bad: BadLine) -> None:
            with bar.external_write_mode():
                stderr.write(f"{path}:{bad.line}: {bad.reason}")

        def progress(offset: int) -> None:
            bar.update(offset - bar.n)

        yield stream, PairFileFeedback(progress, on_bad_line)


def fail_on_bad_lines(report: PairFileReport, path: str) -> None:
    """Exit status 1 when any line of the file could not be used (each was reported)."""
    if report.bad_line_count:
        raise CommandError(
            f"{report.bad_line_count} line(s) of {path} could not be used (reported above); "
            f"{report.pairs} pairs were",
            returncode=1,
        )


def training_bar(*, disable: bool = False, file=None) -> tqdm:
    """Training progress in percent: a total known before the first step (the steps a time
    budget affords are only known as the run goes)."""
    return tqdm(desc="training", total=100, unit="%", disable=disable, file=file)


def training_bar_update(bar: tqdm, event: dict) -> None:
    if event.get("fraction") is None:
        return
    bar.n = int(100 * event["fraction"])
    if event.get("step") is not None:
        bar.set_postfix(
            epoch=event.get("epoch"), step=event["step"], loss=f"{event.get('loss', 0):.3f}"
        )
    bar.refresh()
