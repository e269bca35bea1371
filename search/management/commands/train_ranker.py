from django.core.management.base import BaseCommand, CommandError

from search.judged import JudgedSetError, judged_set_read
from search.ranker import ranker_rollback
from search.ranker_training import RankerTrainingError, ranker_train


class Command(BaseCommand):
    help = (
        "Train a learned ranker (LightGBM LambdaMART) on the search log's click-model "
        "judgments and the features logged with each search; it goes live only when its "
        "held-out nDCG@10 beats the live ranker's (or fusion's) by SEARCH_RANKER_MARGIN and, "
        "with SEARCH_INTERLEAVE_FRACTION > 0, it wins an interleaving test. --rollback: the "
        "ranker live before the live one, or fusion alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", default="", help="default: ranker-<date>-<time>")
        parser.add_argument(
            "--judged", default="", help="a judged query set whose grades are trained on too"
        )
        parser.add_argument(
            "--no-promote", action="store_true", help="measure and store it, never make it live"
        )
        parser.add_argument("--rollback", action="store_true", help="train nothing; roll back")

    def handle(self, *args, name, judged, no_promote, rollback, **options):
        if rollback:
            live = ranker_rollback()
            self.stdout.write(f"live ranker: {live or 'none (fusion ranks)'}")
            return
        try:
            judged_set = judged_set_read(judged) if judged else ()
            ranker = ranker_train(name=name, judged_set=judged_set, promote=not no_promote)
        except (RankerTrainingError, JudgedSetError) as exc:
            raise CommandError(str(exc)) from exc
        metrics = ranker.metrics
        ndcg = metrics["ndcg@10"]

        def shown(value):
            return "-" if value is None else f"{value:.3f}"

        self.stdout.write(
            f"{ranker.name}: trained on {metrics['trained_queries']} queries "
            f"({metrics['trained_examples']} examples); held-out nDCG@10 on "
            f"{metrics['held_out_queries']} queries: fusion {shown(ndcg['fusion'])}, live "
            f"{shown(ndcg['live'])}, candidate {shown(ndcg['candidate'])}\n"
            f"decision: {metrics['decision']}"
        )
