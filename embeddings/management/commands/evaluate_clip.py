from django.core.management.base import BaseCommand, CommandError

from embeddings.finetuning import FinetuneError, space_evaluate
from embeddings.management.commandline import print_metrics, space_by_name


class Command(BaseCommand):
    help = (
        "Text-to-image and image-to-text Recall@1/5/10 of a space (default: the active one) "
        "on the catalog's validation split; the result is stored on the space."
    )

    def add_arguments(self, parser):
        parser.add_argument("--space", help="name of the space (default: the active one)")

    def handle(self, *args, space=None, **options):
        target = space_by_name(space)
        try:
            metrics = space_evaluate(space=target)
        except FinetuneError as exc:
            raise CommandError(str(exc)) from exc
        print_metrics(self.stdout, {target.name: metrics})
        self.stdout.write(
            f"on {metrics['val_products']} validation products ({metrics['val_pairs']} pairs)"
        )
