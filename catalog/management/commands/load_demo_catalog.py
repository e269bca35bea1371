from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.services import demo_catalog_load


class Command(BaseCommand):
    help = (
        "Create the synthetic demo shop (deterministic for a seed): products with English "
        "and Chinese titles and rendered photos. Running it again adds only missing SKUs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--products", type=int, default=2000)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--no-embed",
            action="store_true",
            help="send no catalog_changed: no embedding in the active space (e.g. when a model "
            "is trained next) and no vocabulary (run rebuild_vocabulary after)",
        )

    def handle(self, *args, products, seed, no_embed, **options):
        if products < 1:
            raise CommandError("--products must be at least 1")
        with tqdm(
            total=products, desc="demo products", unit="product", disable=options["verbosity"] == 0
        ) as bar:
            created = demo_catalog_load(
                count=products, seed=seed, embed=not no_embed, progress=bar.update
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"{created} demo products created ({products - created} already there)"
            )
        )
