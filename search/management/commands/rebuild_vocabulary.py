from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.models import Product
from search.models import ProductTerms, Suggestion, VocabularyWord
from search.vocabulary import vocabulary_rebuild


class Command(BaseCommand):
    help = (
        "Recount the vocabulary (typo correction) and the suggestions from every product, in "
        "batches. Search keeps working meanwhile; --from-scratch empties the tables first."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=2000)
        parser.add_argument(
            "--from-scratch",
            action="store_true",
            help="empty the vocabulary and suggestions first instead of recounting in place",
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="only when nothing was ever counted (a catalog loaded with --no-embed)",
        )

    def handle(self, *args, batch_size=2000, from_scratch=False, if_empty=False, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if if_empty and ProductTerms.objects.exists():
            return
        with tqdm(
            total=Product.objects.count(),
            desc="products",
            unit="product",
            disable=options["verbosity"] == 0,
        ) as bar:
            counted = vocabulary_rebuild(
                from_scratch=from_scratch, batch_size=batch_size, progress=bar.update
            )
        self.stdout.write(
            f"Counted {counted} products: {VocabularyWord.objects.count()} words, "
            f"{Suggestion.objects.count()} suggestions."
        )
