import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.models import Product, ProductImage
from embeddings.management.commandline import space_by_name
from embeddings.reindex import (
    fanout_available,
    reindex_chunks_requeue,
    reindex_chunks_send,
    reindex_plan,
    reindex_progress,
    reindex_report,
)
from embeddings.vectors import EmbedReport, space_fill
from shop_search.celery import queued_messages


class Command(BaseCommand):
    help = (
        "Compute the image and caption vectors of a space (the active one by default) with a "
        "progress bar. With a broker, the work goes in chunks to the `embed` queue, shared by "
        "every worker; without one, it runs here in batches. Interrupted? Run it again: it "
        "continues where it stopped."
    )

    def add_arguments(self, parser):
        parser.add_argument("--space", help="name of the space to fill (default: the active one)")
        parser.add_argument(
            "--missing-only",
            action="store_true",
            help="only images and products without vectors in the space",
        )
        parser.add_argument(
            "--batch-size", type=int, default=256, help="ids per batch when running in process"
        )
        parser.add_argument(
            "--restart",
            action="store_true",
            help="start a full reindex over instead of resuming an interrupted one",
        )
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=None,
            help="ids per chunk (one task each) with a broker (default: REINDEX_CHUNK_SIZE)",
        )
        parser.add_argument(
            "--no-wait",
            action="store_true",
            help="with a broker: queue the chunks and return at once (run the command again "
            "to follow the progress)",
        )
        parser.add_argument(
            "--in-process",
            action="store_true",
            help="compute here, in batches, even when a broker is configured",
        )

    def handle(
        self,
        *args,
        space=None,
        missing_only=False,
        batch_size=256,
        restart=False,
        chunk_size=None,
        no_wait=False,
        in_process=False,
        **options,
    ):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        chunk_size = settings.REINDEX_CHUNK_SIZE if chunk_size is None else chunk_size
        if chunk_size < 1:
            raise CommandError("--chunk-size must be at least 1")
        target = space_by_name(space)
        quiet = options["verbosity"] == 0
        if fanout_available() and not in_process:
            report = self._fan_out(target, missing_only, chunk_size, restart, no_wait, quiet)
            if report is None:
                return
        else:
            if no_wait:
                raise CommandError(
                    "--no-wait queues the work for the workers: it needs a broker "
                    "(CELERY_BROKER_URL) and no --in-process"
                )
            report = self._in_process(target, missing_only, batch_size, restart, quiet)
        self.stdout.write(
            self.style.SUCCESS(
                f"{target}: {report.embedded} vectors computed, {report.skipped} up to date, "
                f"{len(report.failed)} images failed"
            )
        )
        for image_id, reason in sorted(report.failed.items()):
            self.stdout.write(f"  image {image_id}: {reason}")

    def _in_process(self, target, missing_only, batch_size, restart, quiet) -> EmbedReport:
        if target.reindex_cursor and not (missing_only or restart):
            self.stdout.write(
                f"Resuming the interrupted reindex of {target} at {target.reindex_cursor}"
            )
        bars = {
            "images": tqdm(
                total=ProductImage.objects.count(), desc="images", unit="img", disable=quiet
            ),
            "captions": tqdm(
                total=Product.objects.count(), desc="captions", unit="product", disable=quiet
            ),
        }
        try:
            return space_fill(
                space=target,
                missing_only=missing_only,
                batch_size=batch_size,
                restart=restart,
                progress=lambda kind, n: bars[kind].update(n),
            )
        finally:
            for bar in bars.values():
                bar.close()

    def _fan_out(self, target, missing_only, chunk_size, restart, no_wait, quiet):
        """Chunks on the `embed` queue; progress from the database until every one is done."""
        queue = settings.CELERY_TASK_ROUTES["embeddings.tasks.reindex_chunk"]["queue"]
        plan = reindex_plan(
            space=target, missing_only=missing_only, chunk_size=chunk_size, restart=restart
        )
        if plan.resumed:
            state = reindex_progress(space=target)
            mode = "missing vectors only" if plan.missing_only else "every vector"
            self.stdout.write(
                f"Resuming the unfinished reindex of {target} ({mode}): {state.chunks_done} of "
                f"{state.chunks} chunks done"
            )
            if plan.missing_only != missing_only:
                self.stdout.write("  (its own mode is kept: --restart starts over)")
            # Pending chunks go out again if their messages are gone; dead workers' too.
            sent = len(
                reindex_chunks_requeue(
                    space=target, queue_empty=queued_messages(queue) == 0, pending_after=0
                )
            )
        else:
            sent = reindex_chunks_send(
                chunk_ids=list(target.reindex_chunks.order_by("pk").values_list("pk", flat=True))
            )
        self.stdout.write(f"{sent} chunks of up to {chunk_size} ids queued on the {queue} queue")
        if no_wait:
            self.stdout.write(
                f"Not waiting: `reindex_embeddings --space {target.name}` follows the progress "
                "and re-queues what dead workers held"
            )
            return None
        state = reindex_progress(space=target)
        bars = {
            kind: tqdm(total=state.total[kind], desc=kind, unit=unit, disable=quiet)
            for kind, unit in (("images", "img"), ("captions", "product"))
        }
        errors_shown: dict[int, str] = {}
        try:
            while True:
                for kind, bar in bars.items():
                    bar.update(state.done[kind] - bar.n)
                for chunk_id, error in state.errors.items():
                    if errors_shown.get(chunk_id) != error:
                        errors_shown[chunk_id] = error
                        tqdm.write(f"chunk {chunk_id} failed (it is tried again): {error}")
                if state.finished:
                    break
                if state.failing:
                    raise CommandError(
                        f"{len(state.failing)} chunk(s) of {target} keep failing (above); fix "
                        "the cause and run the command again: it resumes where it stopped"
                    )
                requeued = reindex_chunks_requeue(
                    space=target, queue_empty=queued_messages(queue) == 0
                )
                if requeued:
                    tqdm.write(
                        f"re-queued {len(requeued)} chunk(s) that a worker held too long or "
                        "whose message was lost"
                    )
                time.sleep(settings.REINDEX_POLL_SECONDS)
                state = reindex_progress(space=target)
        finally:
            for bar in bars.values():
                bar.close()
        return reindex_report(space=target)
