import json

from django.core.management.base import BaseCommand, CommandError

from search.simulation import shoppers_simulate


class Command(BaseCommand):
    help = (
        "Simulated shoppers on the demo catalog: they search in words of their own "
        "(search/data/shopper_words.json) or the catalog's, click relevant results with a "
        "position bias, add to cart, buy, and reformulate in catalog words when nothing "
        "relevant is shown; every search and event goes through the real search log."
    )

    def add_arguments(self, parser):
        parser.add_argument("--searches", type=int, required=True, help="searches to make")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, searches, seed, **options):
        if searches < 1:
            raise CommandError("--searches must be at least 1")
        try:
            report = shoppers_simulate(searches=searches, seed=seed)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(report.as_dict()))
