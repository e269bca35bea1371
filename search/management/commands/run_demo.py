import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection

from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_active
from search.pipeline import search_preload

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "The demo, as bin/demo runs it, in one process (each start of Django costs seconds): "
        "prepare_demo, then the shop served at once by Django's development server. While a "
        "random init is active its first model trains in a background process "
        "(train_demo_model, at low priority, logged in var/demo-training.log, stopped with the "
        "server); the first search's model loads in a thread meanwhile."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="8000", help="port or address:port")
        parser.add_argument("--products", type=int, default=2000)
        parser.add_argument(
            "--training-log",
            default=settings.BASE_DIR / "var" / "demo-training.log",
            help="where the background training writes (default: var/demo-training.log)",
        )
        parser.add_argument(
            "--admin-password",
            default="",
            help="make an `admin` superuser with this password if there is none (the demo only)",
        )

    def handle(self, *args, addrport, products, admin_password, training_log, **options):
        # A `kill` ends the server through `finally`, which stops the training with it.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        call_command(
            "prepare_demo", products=products, admin_password=admin_password, stdout=self.stdout
        )
        trainer = None
        if space_active().source == EmbeddingSpace.Source.RANDOM:
            trainer = self._trainer_start(Path(training_log))
        connection.close()  # the server's threads open their own
        threading.Thread(target=_preload, name="search-preload", daemon=True).start()
        port = addrport.rpartition(":")[2]
        self.stdout.write(f"Shop: http://localhost:{port}/   Admin: http://localhost:{port}/admin/")
        try:
            call_command("runserver", addrport, use_reloader=False)
        finally:
            if trainer is not None:
                # It records its run as failed, so the next start trains again.
                trainer.terminate()
                trainer.wait()

    def _trainer_start(self, log: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.stdout.write(
            "The first model trains in the background (about 10 minutes on 2 cores): progress "
            f"on the shop's pages, in the admin (Fine-tune runs) and in {log}."
        )
        with open(log, "w") as out:
            return subprocess.Popen(
                ["nice", "-n", "10", sys.executable, "manage.py", "train_demo_model"],
                cwd=settings.BASE_DIR,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def _preload() -> None:
    try:
        search_preload()
    except Exception:  # the first search then loads it, and says what fails
        logger.warning("could not load the search model ahead of the first search", exc_info=True)
    finally:
        connection.close()
