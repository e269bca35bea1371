from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.models import Product
from embeddings.pairs_export import FORMATS, catalog_pairs_export


class Command(BaseCommand):
    help = (
        "Write the catalog's (title, image) pairs with finetune_clip's product-level split: "
        "train.tsv and dev.tsv ('text<TAB>base64 image', the toolkits' format), or train.csv "
        "and val.csv with the images beside them (open_clip_train's --dataset-type csv)."
    )

    def add_arguments(self, parser):
        parser.add_argument("out", metavar="OUT", help="folder to write into (made if missing)")
        parser.add_argument("--format", choices=FORMATS, default="tsv")
        parser.add_argument(
            "--max-products", type=int, help="only the first N products (e.g. for a sample)"
        )
        parser.add_argument(
            "--absolute-paths",
            action="store_true",
            help="csv: image paths absolute, not relative to OUT",
        )

    def handle(self, *args, out, format, max_products=None, absolute_paths=False, **options):
        if max_products is not None and max_products < 1:
            raise CommandError("--max-products must be at least 1")
        total = Product.objects.count()
        with tqdm(
            total=min(total, max_products or total),
            desc="exporting",
            unit="product",
            disable=options["verbosity"] == 0,
        ) as bar:
            try:
                report = catalog_pairs_export(
                    out_dir=out,
                    format=format,
                    max_products=max_products,
                    absolute_paths=absolute_paths,
                    progress=bar.update,
                )
            except OSError as exc:
                raise CommandError(f"cannot write into {out}: {exc}") from exc
        for image_id, reason in report.skipped_images:
            self.stderr.write(f"image {image_id} left out: {reason}")
        for name, pairs in report.files.items():
            self.stdout.write(
                f"{report.out_dir / name}: {pairs} pairs of {report.products[name]} products"
            )
        if format == "csv":
            self.stdout.write(f"{report.images_written} images written under {out}/images/")
