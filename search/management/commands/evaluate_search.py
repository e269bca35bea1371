import json
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError

from embeddings.finetuning import FinetuneError, space_evaluate
from embeddings.management.commandline import print_metrics, space_by_name
from search.evaluation import space_search_evaluate
from search.judged import JudgedEvaluation, JudgedSetError, judged_set_evaluate, judged_set_read


class Command(BaseCommand):
    help = (
        "Replay the logged queries with enough judgments against a space's image vectors "
        "(default: the active space) and print nDCG@10 and MRR (all queries, those with "
        "words of the shoppers' own, those in catalog words) beside the catalog's Recall@K. "
        "With --judgments FILE: score a judged query set against the shop search instead."
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
        parser.add_argument(
            "--judgments",
            metavar="FILE",
            help="a judged query set (query<TAB>rule<TAB>grade, search/judged.py): search each "
            "query as a shopper does (the active space) and print nDCG@10, P@10, zero results",
        )
        parser.add_argument(
            "--min-ndcg",
            type=float,
            default=None,
            metavar="X",
            help="with --judgments: fail when the overall nDCG@10 is below X (a floor for CI)",
        )

    def handle(self, *args, **options):
        if options["judgments"]:
            self.handle_judgments(options)
            return
        if options["min_ndcg"] is not None:
            raise CommandError("--min-ndcg goes with --judgments")
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

    def handle_judgments(self, options):
        for name in ("space", "held_out", "min_searches"):
            if options[name] not in (None, False):
                option = "--" + name.replace("_", "-")
                raise CommandError(
                    f"{option} does not go with --judgments (it searches the "
                    "active space as shoppers do)"
                )
        floor = options["min_ndcg"]
        if floor is not None and not 0 <= floor <= 1:
            raise CommandError("--min-ndcg is between 0 and 1")
        space = space_by_name(None)
        try:
            evaluation = judged_set_evaluate(judged_set_read(options["judgments"]))
        except JudgedSetError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(judged_json(space.name, evaluation, options)))
        else:
            judged_table(self.stdout, space.name, evaluation, per_query=options["queries"])
        ndcg = evaluation.overall.ndcg
        if floor is not None and (ndcg is None or ndcg < floor):
            shown = "none" if ndcg is None else f"{ndcg:.3f}"
            raise CommandError(f"nDCG@10 {shown} is below the floor {floor:.3f}")


def judged_json(space: str, evaluation: JudgedEvaluation, options: dict) -> dict:
    result = {
        "space": space,
        "judgments": str(options["judgments"]),
        "overall": asdict(evaluation.overall),
        "groups": {name: asdict(row) for name, row in evaluation.groups.items()},
    }
    if options["queries"]:
        result["per_query"] = [asdict(score) for score in evaluation.scores]
    return result


def _figure(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def judged_table(stdout, space: str, evaluation: JudgedEvaluation, *, per_query: bool) -> None:
    """Per query (when asked), then overall and per group: nDCG@10, P@10, zero results."""
    width = max([32] + [len(s.query) + 2 for s in evaluation.scores if per_query])
    if per_query:
        stdout.write(f"{'query':<{width}}{'nDCG@10':>9}{'P@10':>7}{'count':>7}  zero-result")
        for s in evaluation.scores:
            if s.expects_nothing:
                verdict = "found nothing (expected)" if not s.count else "expected nothing"
                stdout.write(f"{s.query:<{width}}{'':>16}{s.count:>7}  {verdict}")
                continue
            zero = "yes" if s.zero_result else ("no relevant product" if not s.judged else "")
            stdout.write(
                f"{s.query:<{width}}{_figure(s.ndcg, 9)}{_figure(s.precision, 7)}{s.count:>7}  "
                f"{zero}"
            )
        stdout.write("")
    stdout.write(f"judged set on space {space}")
    stdout.write(
        f"{'':<{width}}{'queries':>8}{'nDCG@10':>9}{'P@10':>7}{'zero-result':>13}"
        f"{'none found nothing':>20}"
    )
    rows = {"overall": evaluation.overall} | {f"  {k}": v for k, v in evaluation.groups.items()}
    for label, row in rows.items():
        nothing = (
            f"{row.nothing_found * row.nothing_queries:.0f} of {row.nothing_queries}"
            if row.nothing_queries
            else "-"
        )
        stdout.write(
            f"{label:<{width}}{row.queries:>8}{_figure(row.ndcg, 9)}{_figure(row.precision, 7)}"
            f"{_figure(row.zero_result_rate, 13)}{nothing:>20}"
        )
    if evaluation.overall.unjudged:
        stdout.write(
            "no relevant product in the catalog (left out): "
            + ", ".join(repr(q) for q in evaluation.overall.unjudged)
        )
