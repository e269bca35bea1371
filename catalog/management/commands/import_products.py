import csv
from contextlib import ExitStack
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse
from tqdm import tqdm

from catalog.importing.readers import ImportFileError
from catalog.importing.run import import_job_run
from catalog.importing.selectors import REPORT_COLUMNS, import_report_row
from catalog.importing.services import import_files_check, import_format_from_name
from catalog.models import ImportJob

ERRORS_SHOWN = 20


class Command(BaseCommand):
    help = (
        "Import products from a CSV (with --images ZIP), a TSV of text<TAB>base64 image, or "
        "JSON Lines; a Shopify or WooCommerce product export is told by its header. Rows are "
        "upserted by SKU in batches; bad rows are reported and skipped. "
        "Interrupted? Run it again: it completes what is missing and changes nothing else."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="the products file (.csv, .tsv, .jsonl)")
        parser.add_argument("--images", help="ZIP of the images that the CSV/JSONL rows name")
        parser.add_argument(
            "--format",
            choices=ImportJob.Format.values,
            help="the file's format (default: from its extension)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="validate everything, write nothing"
        )
        parser.add_argument("--report", help="write the rows that failed, and why, to this CSV")
        parser.add_argument("--batch-size", type=int, help="rows per committed batch")
        parser.add_argument(
            "--no-embed",
            action="store_true",
            help="do not queue embedding of the imported products (e.g. a reindex follows)",
        )

    def handle(self, *args, file, images=None, format=None, report=None, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        if images and not Path(images).is_file():
            raise CommandError(f"no such file: {images}")
        format = format or import_format_from_name(path.name)
        if not format:
            raise CommandError(
                f"cannot tell the format of {path.name}: pass --format csv|tsv|jsonl"
            )
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        dry_run = options["dry_run"]
        job = ImportJob(
            format=format,
            dry_run=dry_run,
            source_name=str(path)[-255:],
            images_name=str(images or "")[-255:],
        )
        with ExitStack() as stack:
            source = stack.enter_context(path.open("rb"))
            archive = stack.enter_context(open(images, "rb")) if images else None
            try:
                job.format = import_files_check(format=format, source=source, images=archive)
            except ImportFileError as exc:
                raise CommandError(str(exc)) from None
            if not dry_run:
                job.save()  # a dry run writes nothing, not even its job
            writer = None
            if report:
                writer = csv.writer(stack.enter_context(open(report, "w", newline="")))
                writer.writerow(REPORT_COLUMNS)
            bar = stack.enter_context(
                tqdm(
                    total=path.stat().st_size,
                    unit="B",
                    unit_scale=True,
                    desc=path.name,
                    disable=options["verbosity"] == 0,
                )
            )
            shown = 0

            def on_errors(errors):
                nonlocal shown
                for error in errors:
                    if writer:
                        writer.writerow(
                            import_report_row(error.line, error.sku, error.field, error.message)
                        )
                    if shown < ERRORS_SHOWN:
                        field = f"{error.field}: " if error.field else ""
                        bar.write(f"line {error.line}: {field}{error.message}", file=self.stderr)
                    shown += 1

            def progress(job):
                bar.update(job.resume_offset - bar.n)
                bar.set_postfix(rows=job.rows_processed, failed=job.rows_failed, refresh=False)

            try:
                import_job_run(
                    job=job,
                    source=source,
                    images=archive,
                    embed=not options["no_embed"],
                    batch_size=options["batch_size"],
                    progress=progress,
                    on_errors=on_errors,
                )
            except KeyboardInterrupt:
                raise CommandError(
                    f"stopped: the rows up to line {job.resume_line} are imported; run the "
                    "same command again to complete the import",
                    returncode=130,
                ) from None
        if job.status == ImportJob.Status.FAILED:
            raise CommandError(job.error)
        self._summary(job, shown, report)

    def _summary(self, job: ImportJob, shown: int, report: str | None) -> None:
        verb = "would be " if job.dry_run else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"{'Dry run: ' if job.dry_run else ''}{job.rows_processed} rows read: "
                f"{job.rows_created} {verb}created, {job.rows_updated} {verb}updated, "
                f"{job.rows_unchanged} unchanged, {job.rows_failed} failed; "
                f"{job.images_created} images {verb}added"
            )
        )
        if shown > ERRORS_SHOWN:
            self.stdout.write(f"... {shown - ERRORS_SHOWN} more errors not shown above")
        if job.rows_failed:
            where = report or (
                reverse("admin:catalog_importjob_report", args=[job.pk])
                if job.pk
                else "--report FILE"
            )
            self.stdout.write(f"Every failed row, and why: {where}")
