import signal
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from embeddings.distributed_finetune import finetune_run_train
from embeddings.finetuning import FinetuneError, FinetuneOptions
from embeddings.management.commandline import training_bar, training_bar_update
from embeddings.models import EmbeddingSpace
from embeddings.services import finetune_run_create, finetune_runs_abandoned_fail
from embeddings.spaces import space_ensure_default

DEMO_SPACE = "shop-tiny-demo"
# Any fixed number: held while this command runs, so two `bin/demo` never train twice.
DEMO_TRAIN_LOCK = 7_301_126


class Command(BaseCommand):
    help = (
        "Train the demo's first model, once, while the shop serves: a fine-tuning run of the "
        "active random space on the catalog, which goes live through the usual switch (filled, "
        "indexed, then activated) without restarting the web server. Does nothing when a "
        "trained space is active or this command already runs."
    )

    def add_arguments(self, parser):
        # Defaults: finetune_clip's. Smaller batches suit a small catalog (more steps an epoch).
        parser.add_argument("--epochs", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=None)
        # 0: any trained model beats an untrained one on the full demo; the report says by how
        # much. A tiny catalog (a test's) can be noise either way: a negative margin promotes.
        parser.add_argument("--margin", type=float, default=0.0)
        parser.add_argument(
            "--max-minutes",
            type=float,
            default=8.0,
            help="training budget (default: 8, on a 2-core CPU)",
        )
        parser.add_argument(
            "--architecture", help="train this architecture from scratch (tests: shop-micro)"
        )

    def handle(self, *args, epochs, batch_size, margin, max_minutes, architecture, **options):
        # A stopped demo (Ctrl-C, kill) records its run as failed, so the next one trains.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [DEMO_TRAIN_LOCK])
            if not cursor.fetchone()[0]:
                self.stdout.write("The demo model is training in another process already.")
                return
        try:
            self._train(epochs, batch_size, margin, max_minutes, architecture, options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [DEMO_TRAIN_LOCK])

    def _train(self, epochs, batch_size, margin, max_minutes, architecture, options):
        # Holding the lock, no one else runs the demo's training: a run of it still marked
        # queued or running belongs to a process that was killed.
        finetune_runs_abandoned_fail(name=DEMO_SPACE)
        active = space_ensure_default()
        if active.source != EmbeddingSpace.Source.RANDOM:
            self.stdout.write(f"Active space: {active} (trained); not training.")
            return
        if EmbeddingSpace.objects.filter(name=DEMO_SPACE).exists():
            # Trained by an earlier run that was stopped while filling: finish the switch.
            call_command("activate_space", DEMO_SPACE, verbosity=options["verbosity"])
            return
        run_options = FinetuneOptions(
            name=DEMO_SPACE,
            epochs=epochs,
            batch_size=batch_size,
            max_minutes=max_minutes,
            margin=margin,
            scratch=bool(architecture),
            architecture=architecture,
        )
        try:
            run = finetune_run_create(options=run_options)
        except FinetuneError as exc:  # a run started from the admin goes on
            raise CommandError(f"{exc} The demo model trains when it is done.") from exc
        bar = training_bar(disable=options["verbosity"] == 0)
        try:
            run = finetune_run_train(run=run, on_progress=lambda e: training_bar_update(bar, e))
        except FinetuneError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        self.stdout.write(self.style.SUCCESS(run.result["decision"]))
