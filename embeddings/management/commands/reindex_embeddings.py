from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.models import Product, ProductImage
from embeddings.management.commandline import space_by_name
from embeddings.vectors import space_fill


class Command(BaseCommand):
    help = (
        "Compute the image and caption vectors of a space (the active one by default), in "
        "batches, with a progress bar. Interrupted? Run it again: it continues where it stopped."
    )

    def add_arguments(self, parser):
        parser.add_argument("--space", help="name of the space to fill (default: the active one)")
        parser.add_argument(
            "--missing-only",
            action="store_true",
            help="only images and products without vectors in the space",
        )
        parser.add_argument("--batch-size", type=int, default=256)
        parser.add_argument(
            "--restart",
            action="store_true",
            help="start a full reindex over instead of resuming an interrupted one",
        )

    def handle(
        self, *args, space=None, missing_only=False, batch_size=256, restart=False, **options
    ):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        target = space_by_name(space)
        if target.reindex_cursor and not (missing_only or restart):
            self.stdout.write(
                f"Resuming the interrupted reindex of {target} at {target.reindex_cursor}"
            )
        bars = {
            "images": tqdm(
                total=ProductImage.objects.count(),
                desc="images",
                unit="img",
                disable=options["verbosity"] == 0,
            ),
            "captions": tqdm(
                total=Product.objects.count(),
                desc="captions",
                unit="product",
                disable=options["verbosity"] == 0,
            ),
        }
        try:
            report = space_fill(
                space=target,
                missing_only=missing_only,
                batch_size=batch_size,
                restart=restart,
                progress=lambda kind, n: bars[kind].update(n),
            )
        finally:
            for bar in bars.values():
                bar.close()
        self.stdout.write(
            self.style.SUCCESS(
                f"{target}: {report.embedded} vectors computed, {report.skipped} up to date, "
                f"{len(report.failed)} images failed"
            )
        )
        for image_id, reason in sorted(report.failed.items()):
            self.stdout.write(f"  image {image_id}: {reason}")
