from django.core.management.base import BaseCommand, CommandError

from catalog.models import Product
from embeddings.inference import InferReport, attributes_infer, inferable_attributes
from embeddings.management.commandline import space_by_name
from embeddings.models import EmbeddingSpace


class Command(BaseCommand):
    help = (
        "Read the attributes products miss (colour, pattern, material, category) from their "
        "photos in the active space, for the whole catalog, in batches with a progress line. "
        "Values are suggestions to review in the admin (Inferred attributes); those confirmed "
        "or at least as sure as their facet's threshold count as facet values. Never changes "
        "an entered value. Interrupted? Run it again: what was read is skipped (--again reads "
        "everything again)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--space", help="the space to read with (default: the active one)")
        parser.add_argument("--batch-size", type=int, default=500, help="products per batch")
        parser.add_argument("--again", action="store_true", help="read again what was read before")

    def handle(self, *args, space=None, batch_size=500, again=False, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        target = space_by_name(space)
        if target.source == EmbeddingSpace.Source.RANDOM:
            raise CommandError(
                f"space {target.name} is untrained (random weights): its readings would be "
                "noise. Train the shop's model first (manage.py finetune_clip)."
            )
        names = inferable_attributes()
        if not names:
            raise CommandError(
                "the catalog holds no attribute with two values or more to read from photos"
            )
        products = Product.objects.filter(status=Product.Status.ACTIVE, images__isnull=False)
        total = products.distinct().count()
        self.stdout.write(f"Reading {', '.join(names)} from photos in space {target.name}.")
        report, last_id, done = InferReport(), 0, 0
        while True:
            ids = list(
                products.filter(pk__gt=last_id)
                .order_by("pk")
                .values_list("pk", flat=True)
                .distinct()[:batch_size]
            )
            if not ids:
                break
            report.add(attributes_infer(space=target, product_ids=ids, skip_recorded=not again))
            last_id, done = ids[-1], done + len(ids)
            if options["verbosity"]:
                self.stdout.write(
                    f"{done}/{total} products, {report.predicted} missing something, "
                    f"{report.suggested} values suggested, {report.counted} counted"
                )
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {report.suggested} values suggested for {report.predicted} products; "
                f"{report.counted} count as facet values (confirmed or above their threshold)."
            )
        )
