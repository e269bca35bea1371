from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from catalog.models import Product
from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_ensure_default


class Command(BaseCommand):
    help = (
        "Make the embedded demo searchable by its words, in one process (each start of Python "
        "with torch costs seconds): migrate, load the demo catalog if the shop is empty, count "
        "its vocabulary, and make the demo admin account. Every step skips what is done. The "
        "first model trains apart (`manage.py train_demo_model`, which bin/demo starts in the "
        "background), so the shop serves meanwhile."
    )

    def add_arguments(self, parser):
        parser.add_argument("--products", type=int, default=2000)
        parser.add_argument("--no-migrate", action="store_true", help="the database is migrated")
        parser.add_argument(
            "--admin-password",
            default="",
            help="make an `admin` superuser with this password if there is none (the demo only)",
        )

    def handle(self, *args, products, no_migrate, admin_password, **options):
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
        if not Product.objects.exists():
            # No embedding now: the random space has no use for vectors; the trained one
            # fills its own when it goes live.
            call_command("load_demo_catalog", products=products, no_embed=True)
        else:
            self.stdout.write("The shop has products already; not loading the demo catalog.")
        # The vocabulary (typo correction, suggestions) of a catalog loaded without signals.
        call_command("rebuild_vocabulary", if_empty=True, verbosity=0)
        users = get_user_model().objects
        if admin_password and not users.filter(username="admin").exists():
            users.create_superuser("admin", "admin@localhost", admin_password)
            self.stdout.write(f"Created the demo admin account: admin / {admin_password}")
        active = space_ensure_default()
        if active.source == EmbeddingSpace.Source.RANDOM:
            self.stdout.write(
                f"Active space: {active} (a random init): words match; photo search waits for "
                "the model that `manage.py train_demo_model` trains."
            )
        else:
            self.stdout.write(f"Active space: {active} (trained).")
