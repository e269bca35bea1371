import json

from django.core.management.base import BaseCommand, CommandError

from embeddings.finetuning import FinetuneError, space_evaluate
from embeddings.management.commandline import print_metrics, space_by_name
from search.evaluation import space_search_evaluate


class Command(BaseCommand):
    help = (
        "Replay the logged queries with enough judgments against a space's image vectors "
        "(default: the active space) and print nDCG@10 and MRR (all queries, those with "
        "words of the shoppers' own, those in catalog words) beside the catalog's Recall@K."
    )

    def add_arguments(self, parser):
        parser.add_argument("--space", help="name of the space (default: the active one)")
        parser.add_argument(
            "--held-out",
            action="store_true",
            help="only the queries fine-tuning holds out (never trained on)",
        )
        parser.add_argument(
            "--min-searches",
            type=int,
            default=None,
            help="queries searched at least this often (default: SEARCH_JUDGMENT_MIN_SEARCHES)",
        )
        parser.add_argument("--queries", action="store_true", help="print every query's scores")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **options):
        if options["min_searches"] is not None and options["min_searches"] < 1:
            raise CommandError("--min-searches must be at least 1")
        space = space_by_name(options["space"])
        try:
            summary, scores = space_search_evaluate(
                space=space,
                held_out_only=options["held_out"],
                min_searches=options["min_searches"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        try:
            recall = space_evaluate(space=space)
        except FinetuneError as exc:
            recall, recall_error = {}, str(exc)
        if options["json"]:
            result = {"space": space.name, "queries": summary, "catalog_recall": recall}
            if options["queries"]:
                result["per_query"] = [score.__dict__ for score in scores]
            self.stdout.write(json.dumps(result))
            return
        if recall:
            print_metrics(self.stdout, {space.name: recall})
            self.stdout.write(f"catalog Recall@K on {recall['val_products']} validation products")
        else:
            self.stdout.write(f"catalog Recall@K: none ({recall_error})")
        if not scores:
            self.stdout.write("no logged queries with enough judgments to evaluate")
            return
        which = "held-out queries" if options["held_out"] else "queries"
        self.stdout.write(f"{'logged ' + which:<28}{'queries':>8}{'nDCG@10':>10}{'MRR':>8}")
        labels = {
            "all": "all",
            "own_words": "in shoppers' own words",
            "catalog_words": "in catalog words",
        }
        for key, label in labels.items():
            row = summary[key]
            if row["queries"]:
                self.stdout.write(
                    f"{label:<28}{row['queries']:>8}{row['ndcg@10']:>10.3f}{row['mrr']:>8.3f}"
                )
        if options["queries"]:
            for score in scores:
                self.stdout.write(
                    f"  {score.query!r}: nDCG@10 {score.ndcg:.3f}, RR {score.reciprocal_rank:.3f}"
                    + (" (own words)" if score.own_words else "")
                )
