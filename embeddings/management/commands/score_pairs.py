import os
from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError

from embeddings.management.commandline import (
    add_model_arguments,
    encoder_from_options,
    fail_on_bad_lines,
    pair_file_reading,
)
from embeddings.pairfiles import pairs_score


class Command(BaseCommand):
    help = (
        "Score every pair of a 'text<TAB>base64 image' file (ERNIE-ViL's predict.tsv) with a "
        "space (default: the active one) or a model: one 'line<TAB>cosine' row per input line, "
        "in input order, streamed in batches. A bad line is reported on stderr and gets an "
        "empty score; the exit status is 1 when any line was bad. Writes nothing else."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="UTF-8 or GB18030, one pair a line, no header")
        parser.add_argument(
            "--out", metavar="FILE", help="where the scores go (default: standard output)"
        )
        add_model_arguments(parser)

    def handle(self, *args, file, out=None, **options):
        label, encoder = encoder_from_options(options)
        if out and not os.access(os.path.dirname(os.path.abspath(out)), os.W_OK):
            raise CommandError(f"cannot write {out}: its folder is missing or not writable")
        with (
            # The input first: a missing one must not truncate an existing --out.
            pair_file_reading(
                file, desc="scoring", stderr=self.stderr, verbosity=options["verbosity"]
            ) as (stream, feedback),
            (
                open(out, "w", encoding="utf-8", newline="\n") if out else nullcontext(self.stdout)
            ) as target,
        ):
            report = pairs_score(
                encoder=encoder,
                stream=stream,
                out=target,
                batch_size=options["batch_size"],
                progress=feedback.progress,
                on_bad_line=feedback.on_bad_line,
            )
        if options["verbosity"] > 0:
            # stderr: standard output may be the scores themselves.
            where = f" into {out}" if out else ""
            self.stderr.write(f"{report.pairs} pairs of {file} scored by {label}{where}")
        fail_on_bad_lines(report, file)
