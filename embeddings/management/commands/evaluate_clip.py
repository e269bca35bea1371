import json

from django.core.management.base import BaseCommand, CommandError

from embeddings.finetuning import FinetuneError, space_evaluate
from embeddings.management.commandline import (
    add_model_arguments,
    encoder_from_options,
    fail_on_bad_lines,
    pair_file_reading,
    print_metrics,
    space_by_name,
)
from embeddings.pairfiles import pairs_recall


class Command(BaseCommand):
    help = (
        "Text-to-image and image-to-text Recall@1/5/10 of a space (default: the active one) "
        "on the catalog's validation split, stored on the space; or, with --pairs, on a file "
        "of 'text<TAB>base64 image' lines (the toolkits' test.tsv), for a space or a model, "
        "writing nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--pairs",
            metavar="FILE",
            help="a 'text<TAB>base64 image' file, UTF-8 or GB18030; identical texts and images "
            "are one item each, and any member of a pair-linked group is a right answer",
        )
        add_model_arguments(parser)
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **options):
        if not options["pairs"]:
            if options["model"] or options["pretrained"] or options["checkpoint"]:
                raise CommandError("--model, --pretrained and --checkpoint need --pairs FILE")
            self._catalog(options)
            return
        path = options["pairs"]
        label, encoder = encoder_from_options(options)
        with pair_file_reading(
            path, desc="evaluating", stderr=self.stderr, verbosity=options["verbosity"]
        ) as (stream, feedback):
            report = pairs_recall(
                encoder=encoder,
                stream=stream,
                batch_size=options["batch_size"],
                progress=feedback.progress,
                on_bad_line=feedback.on_bad_line,
            )
        if options["json"]:
            result = {"model": label, "file": path, **report.summary()}
            self.stdout.write(json.dumps(result, ensure_ascii=False))
        elif report.pairs:
            print_metrics(self.stdout, {label: report.metrics})
            self.stdout.write(
                f"on {report.pairs} pairs of {path}: {report.texts} texts, {report.images} "
                f"images, {report.groups} groups"
            )
        if not report.pairs:
            raise CommandError(f"{path} has no usable pairs")
        fail_on_bad_lines(report, path)

    def _catalog(self, options):
        target = space_by_name(options["space"])
        try:
            metrics = space_evaluate(space=target)
        except FinetuneError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps({"space": target.name, **metrics}))
            return
        print_metrics(self.stdout, {target.name: metrics})
        self.stdout.write(
            f"on {metrics['val_products']} validation products ({metrics['val_pairs']} pairs)"
        )
