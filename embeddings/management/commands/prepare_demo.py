from django.core.management import call_command
from django.core.management.base import BaseCommand

from catalog.models import Product
from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_ensure_default

DEMO_SPACE = "shop-tiny-demo"


class Command(BaseCommand):
    help = (
        "Make the embedded demo useful, once: load the demo catalog if the shop is empty, and "
        "train the first shop-tiny model on it if the active space is still a random init."
    )

    def add_arguments(self, parser):
        parser.add_argument("--products", type=int, default=2000)
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

    def handle(self, *args, products, max_minutes, epochs, batch_size, margin, **options):
        if not Product.objects.exists():
            # No embedding now: the model that search will use is trained next.
            call_command("load_demo_catalog", products=products, no_embed=True)
        else:
            self.stdout.write("The shop has products already; not loading the demo catalog.")
        active = space_ensure_default()
        if active.source != EmbeddingSpace.Source.RANDOM:
            self.stdout.write(f"Active space: {active} (trained); not training.")
        elif EmbeddingSpace.objects.filter(name=DEMO_SPACE).exists():
            # Trained by an earlier run that was stopped while filling: finish the switch.
            call_command("activate_space", DEMO_SPACE)
        else:
            call_command(
                "finetune_clip",
                max_minutes=max_minutes,
                margin=margin,
                name=DEMO_SPACE,
                epochs=epochs,
                batch_size=batch_size,
            )
