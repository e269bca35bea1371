"""Running a bulk import: every row validated, good rows upserted by SKU in batches that
each commit, resumable after its last committed batch (the task calls this).

A shop platform's export (Shopify, WooCommerce) is read by its own module, one product's
lines at a time, into rows with variants that are written here like any other row."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from functools import partial
from typing import IO

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from catalog.importing.files import import_job_files_delete
from catalog.importing.images import (
    CheckedImage,
    ImageArchive,
    ImageRefError,
    image_checked_store,
    image_download,
)
from catalog.importing.locks import import_job_lock, import_job_unlock
from catalog.importing.platforms import RecordGroup, csv_format_detect
from catalog.importing.readers import (
    ImportFileError,
    Record,
    RowError,
    csv_records,
    jsonl_records,
    tsv_records,
)
from catalog.importing.rows import ProductRow, product_row_parse, tsv_row_parse
from catalog.importing.shopify import ShopifyFile
from catalog.importing.variants import VariantsPlan
from catalog.importing.woocommerce import WooCommerceFile
from catalog.models import Category, ImportJob, ImportRowError, Product, ProductImage
from catalog.services import (
    SIGNALLED_FIELDS,
    STATUS_FIELDS,
    category_get_or_create_path,
    category_path_slug,
    products_changed_send,
    products_variants_summarise,
)

logger = logging.getLogger(__name__)

Format = ImportJob.Format
READERS = {Format.CSV: csv_records, Format.TSV: tsv_records, Format.JSONL: jsonl_records}
PLATFORMS = {Format.SHOPIFY: ShopifyFile, Format.WOOCOMMERCE: WooCommerceFile}
PRODUCT_FIELDS = ["title", "description", "brand", "category", "price", "currency", "in_stock"]
_NEW_CATEGORY = object()  # a dry run's category that the import would create


def import_job_run(
    *,
    job: ImportJob,
    source: IO[bytes] | None = None,
    images: IO[bytes] | None = None,
    embed: bool = True,
    batch_size: int | None = None,
    progress: Callable[[ImportJob], None] | None = None,
    on_errors: Callable[[list[RowError]], None] | None = None,
) -> ImportJob:
    """Run an import, or resume it after its last committed batch.

    `source` and `images` are open files when the job keeps no upload (the command);
    otherwise the job's stored files are read. An unsaved job (the command's dry run)
    writes nothing at all: its errors go to `on_errors` only. With `embed` off, nothing
    is queued for embedding (a reindex follows, or a benchmark measures the import alone).
    """
    if job.pk is not None and not import_job_lock(job):
        logger.info("%s is already running elsewhere", job)
        return job
    try:
        if job.status != ImportJob.Status.DONE:
            _job_run(job, source, images, embed, batch_size, progress, on_errors)
        return job
    finally:
        if job.pk is not None:
            import_job_unlock(job)


def _job_run(job, source, images, embed, batch_size, progress, on_errors) -> None:
    job.status, job.error = ImportJob.Status.RUNNING, ""
    job.started = job.started or timezone.now()
    _job_save(job, ["status", "error", "started"])
    try:
        with ExitStack() as stack:
            if source is None and not job.source and job.files_deleted:
                raise ImportFileError(
                    f"the uploaded files of this import were deleted on "
                    f"{job.files_deleted:%Y-%m-%d} (they are kept "
                    f"{settings.IMPORT_FILES_KEEP_DAYS} days): upload them again"
                )
            if source is None and not job.source:
                raise ImportFileError(
                    f"this import read {job.source_name} on the command line: run the "
                    "command again to complete it"
                )
            if source is None:
                source = stack.enter_context(_stored_file(job.source, "data file"))
            if images is None and job.images:
                images = stack.enter_context(_stored_file(job.images, "images ZIP"))
            if job.format == Format.TSV and images is not None:
                raise ImportFileError(
                    "a TSV file carries its images in base64: no ZIP goes with it",
                    field="images",
                )
            archive = ImageArchive(images) if images is not None else None
            if archive is not None:
                stack.callback(archive.close)
            job.source_bytes = _stream_size(source)
            platform, records = _records(job, source)
            batch = _Batch(
                job=job,
                archive=archive,
                embed=embed,
                on_errors=on_errors,
                downloads=stack.enter_context(_downloads()),
                platform=platform,
            )
            size = batch_size or settings.IMPORT_BATCH_SIZE
            for record in records:
                batch.add(record)
                if batch.records >= size:
                    batch.commit()
                    if progress:
                        progress(job)
            batch.commit()
        job.status, job.finished = ImportJob.Status.DONE, timezone.now()
    except ImportFileError as exc:
        job.status, job.error, job.finished = ImportJob.Status.FAILED, str(exc), timezone.now()
    except BaseException as exc:
        job.status = ImportJob.Status.FAILED
        job.error = (
            f"stopped after line {job.resume_line} ({type(exc).__name__}: {exc}); "
            "everything before is committed, and running the import again continues there"
        )
        raise
    finally:
        try:
            _job_save(job, ["status", "error", "finished", "source_bytes"])
        except DatabaseError:  # the connection itself failed: the original error says why
            logger.exception("could not record the state of %s", job)
    if job.status == ImportJob.Status.DONE and (job.source or job.images):
        _job_files_delete(job)
    if progress:
        progress(job)


def _records(job: ImportJob, source: IO[bytes]):
    """The reader of a platform's export (or None), and the records from where the job
    resumes."""
    if job.format == Format.CSV:  # or a platform's export, told by its header
        job.format = csv_format_detect(source)
    _job_save(job, ["source_bytes", "format"])  # progress is measured against the size
    platform = PLATFORMS[job.format](source) if job.format in PLATFORMS else None
    reader = platform.records if platform else partial(READERS[job.format], source)
    return platform, reader(offset=job.resume_offset, line=job.resume_line)


def _job_files_delete(job: ImportJob) -> None:
    # A finished job never reads its files again; they are private data to keep no longer.
    try:
        import_job_files_delete(job=job)
    except (OSError, DatabaseError):
        logger.exception("could not delete the files of %s; the sweep will", job)


class _Batch:
    """The rows read since the last commit, with their errors and checked images."""

    def __init__(self, *, job, archive, embed, on_errors, downloads, platform=None):
        self.job, self.archive, self.embed = job, archive, embed
        self.on_errors, self.downloads, self.platform = on_errors, downloads, platform
        self.write = not job.dry_run
        self.categories: dict[tuple[str, ...], object] = {}
        self.variant_owners: dict[str, tuple[str, int]] = {}  # in this import, by variant SKU
        self.dry_run_skus: set[str] = set()  # the products a dry run would have created
        self._reset()

    def _reset(self) -> None:
        self.rows: list[ProductRow] = []
        self.skus: set[str] = set()
        self.errors: list[RowError] = []
        self.records = 0
        self.url_images: dict[str, Future] = {}

    def add(self, record: Record | RecordGroup) -> None:
        row = self._parse(record)
        if isinstance(row, ProductRow) and row.sku in self.skus:
            # A SKU repeated in the file (or a variation joining its product later on):
            # commit the first, so the later one finds it.
            self.commit()
        if isinstance(row, ProductRow):
            self._images_check(row)
            self.rows.append(row)
            self.skus.add(row.sku)
            self.errors.extend(row.line_errors)
        else:
            self.errors.extend(row)
        self.records += len(record.records) if isinstance(record, RecordGroup) else 1
        self.end = (record.end_offset, record.end_line)

    def _parse(self, record: Record) -> ProductRow | list[RowError]:
        if record.error is not None:
            return [record.error]
        if self.platform is not None:
            return self.platform.parse(record, has_archive=self.archive is not None)
        if self.job.format == Format.TSV:
            return tsv_row_parse(record)
        return product_row_parse(record, has_archive=self.archive is not None)

    def _images_check(self, row: ProductRow) -> None:
        """Check (and store) the row's images now, downloads in the background."""
        for ref in row.images or ():
            if ref.kind == "url":
                if ref.value not in self.url_images:
                    self.url_images[ref.value] = self.downloads.submit(
                        _url_image_checked_store, ref.value, store=self.write
                    )
                row.checked.append(self.url_images[ref.value])
                continue
            try:
                data = ref.value if ref.kind == "inline" else self.archive.read(ref.value)
                row.checked.append(image_checked_store(data, store=self.write))
            except ImageRefError as exc:
                row.checked.append(exc)
        if row.images and row.images[0].kind == "inline":
            row.images[0].value = b""  # the bytes are stored; keep the batch small

    def _rows_with_images(self) -> list[ProductRow]:
        good = []
        for row in self.rows:
            checked, errors = [], []
            for ref, item in zip(row.images or (), row.checked, strict=True):
                if isinstance(item, Future):
                    try:
                        item = item.result()
                    except ImageRefError as exc:
                        item = exc
                if isinstance(item, ImageRefError):
                    label = "the image" if ref.kind == "inline" else repr(ref.value)[:200]
                    errors.append(RowError(row.line, "image", f"{label}: {item}", row.sku))
                else:
                    row.image_shas[ref.value] = item.sha256
                    if item.sha256 not in {c.sha256 for c in checked}:
                        checked.append(item)
            if errors:
                self.errors.extend(errors)
            else:
                row.checked = checked
                good.append(row)
        return good

    def commit(self) -> None:
        if not self.records:
            return
        job = self.job
        rows = self._rows_with_images()
        counts: dict[str, int] = defaultdict(int)
        if self.write:
            with transaction.atomic():
                self._apply(rows, counts)
                self._job_record(counts)
        else:
            self._apply(rows, counts)
            self._job_record(counts)
        job.rows_processed += self.records
        job.rows_failed += counts["failed"]
        for name in ("created", "updated", "unchanged"):
            setattr(job, f"rows_{name}", getattr(job, f"rows_{name}") + counts[name])
        job.images_created += counts["images"]
        job.resume_offset, job.resume_line = self.end
        if self.on_errors and self.errors:
            self.on_errors(self.errors)
        self._reset()

    def _job_record(self, counts) -> None:
        """The batch's errors and counters, in the batch's transaction."""
        counts["failed"] = len({error.line for error in self.errors})
        job = self.job
        if job.pk is None:
            return
        ImportRowError.objects.bulk_create(
            ImportRowError(
                job=job,
                line=error.line,
                sku=error.sku[:200],
                field=error.field[:100],
                message=error.message,
            )
            for error in self.errors
        )
        ImportJob.objects.filter(pk=job.pk).update(
            rows_processed=F("rows_processed") + self.records,
            rows_created=F("rows_created") + counts["created"],
            rows_updated=F("rows_updated") + counts["updated"],
            rows_unchanged=F("rows_unchanged") + counts["unchanged"],
            rows_failed=F("rows_failed") + counts["failed"],
            images_created=F("images_created") + counts["images"],
            resume_offset=self.end[0],
            resume_line=self.end[1],
            updated=timezone.now(),
        )

    def _apply(self, rows: list[ProductRow], counts: dict[str, int]) -> None:
        """Upsert the rows' products, images and variants (or, in a dry run, count them)."""
        existing, current_images = self._existing(rows)
        image_shas = {i.pk: i.sha256 for images in current_images.values() for i in images}
        variants = VariantsPlan(rows, existing, self.variant_owners)
        new, changed, captions, statuses, image_plans, with_variants = [], [], [], [], [], []
        for row in rows:
            product = existing.get(row.sku)
            if row.attach:
                product, fields = self._attached(row, product, current_images), set()
                if product is None:
                    continue
            elif product is None:
                product, fields = self._product_new(row), set()
                if product is None:
                    continue
            else:
                fields = self._product_fill(product, row)
            variants_changed, options_changed, accepted = variants.plan(
                row, product, image_shas, self.errors
            )
            if product.pk is None:  # new, or a dry run's new product gaining variations
                if row.attach or (row.variants and not accepted):
                    continue  # (every variant refused: no product to sell)
                new.append(product)
                counts["created"] += 1
                with_variants += [product] if row.variants else []
                image_plans += [(product, row.checked)] if row.images is not None else []
                continue
            if row.variants:
                with_variants.append(product)
            images_differ = row.images is not None and [
                i.sha256 for i in current_images[product.pk]
            ] != [c.sha256 for c in row.checked]
            if fields or images_differ or variants_changed:
                changed.append((product, fields))
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
            if fields & STATUS_FIELDS:
                statuses.append(product)
            elif fields & SIGNALLED_FIELDS or options_changed:
                captions.append(product)
            if images_differ:
                image_plans.append((product, row.checked))
        counts["images"] = sum(
            len({c.sha256 for c in checked} - {i.sha256 for i in current_images[p.pk]})
            for p, checked in image_plans
        )
        if not self.write:
            self.dry_run_skus.update(product.sku for product in new)
            return
        self._products_write(new, changed, rows)
        new_images = self._images_apply(image_plans, current_images)
        # Variants link to their photos, and their product's price and options follow them.
        variants.write([product.pk for product in with_variants])
        products_variants_summarise([product.pk for product in with_variants])
        if self.embed:
            products_changed_send(
                image_ids=[image.pk for image in new_images],
                product_ids=[p.pk for p in new] + [p.pk for p in captions],
                status_changed=[p.pk for p in statuses],
            )

    def _existing(self, rows: list[ProductRow]) -> tuple[dict[str, Product], dict]:
        """The rows' products already in the catalog (locked when writing), by SKU, and
        their images by product id."""
        products = Product.objects.filter(sku__in=[row.sku for row in rows])
        # Locked in id order, as the embed tasks lock them (no deadlock between the two).
        products = products.order_by("pk")
        existing = {p.sku: p for p in (products.select_for_update() if self.write else products)}
        current_images = defaultdict(list)
        for image in ProductImage.objects.filter(product__in=list(existing.values())).only(
            "id", "product_id", "sha256", "position"
        ):
            current_images[image.product_id].append(image)
        return existing, current_images

    def _product_new(self, row: ProductRow) -> Product | None:
        if "price" not in row.values and not row.variants and self.job.format != Format.TSV:
            self.errors.append(RowError(row.line, "price", "is required", row.sku))
            return None
        # With variants, its price follows from theirs once they are written.
        price = min((v.price for v in row.variants or ()), default=Decimal("0.00"))
        product = Product(sku=row.sku, price=price, attributes={})
        self._product_fill(product, row)
        return product

    def _attached(self, row: ProductRow, product: Product | None, current_images):
        """The product that variations joining it later belong to; its photos gain theirs."""
        if product is None and row.sku in self.dry_run_skus:
            return Product(sku=row.sku)
        if product is None:
            message = f"its parent {row.sku!r} is neither before it in the file nor in the catalog"
            self.errors += [RowError(v.line, "Parent", message, row.sku) for v in row.variants]
            return None
        shas = {image.sha256 for image in current_images[product.pk]}
        if added := [item for item in row.checked if item.sha256 not in shas]:
            row.checked = [*current_images[product.pk], *added]  # kept by their sha256
        row.images = row.images if added else None
        return product

    def _products_write(self, new, changed, rows) -> None:
        now = timezone.now()
        given = set().union(*(row.values for row in rows)) - set(PRODUCT_FIELDS)
        Product.objects.bulk_create(
            new,
            update_conflicts=True,  # created meanwhile by another import: update it
            unique_fields=["sku"],
            update_fields=[*PRODUCT_FIELDS, *sorted(given), "attributes", "updated"],
        )
        for product, _ in changed:
            product.updated = now
        updated_fields = set().union(*(fields for _, fields in changed))
        Product.objects.bulk_update(
            [product for product, _ in changed],
            [name if name != "category_id" else "category" for name in updated_fields]
            + ["updated"],
        )

    def _product_fill(self, product: Product, row: ProductRow) -> set[str]:
        """Set the row's values on the product; the names of those that changed."""
        wanted = {"title": row.title, **row.values}
        if row.category is not None:
            wanted["category_id"] = self._category(row.category) if row.category else None
        names = [option["name"] for option in product.options]
        if row.variants and names != row.option_names:
            # The shop's order of options (a variant's JSON keeps none); values follow.
            wanted["options"] = [{"name": name, "values": []} for name in row.option_names]
        attributes = {**product.attributes, **row.attributes}
        if row.titles:
            attributes["titles"] = {**(product.attributes.get("titles") or {}), **row.titles}
        wanted["attributes"] = attributes
        changed = set()
        for name, value in wanted.items():
            if getattr(product, name) != value:
                setattr(product, name, value)
                changed.add(name)
        return changed

    def _category(self, path: tuple[str, ...]):
        if path not in self.categories:
            if self.write:
                self.categories[path] = category_get_or_create_path(path).pk
            else:
                found = Category.objects.filter(slug=category_path_slug(path)).first()
                self.categories[path] = found.pk if found else _NEW_CATEGORY
        return self.categories[path]

    def _images_apply(self, plans, current_images) -> list[ProductImage]:
        """Make each product's images the row's, in order: keep, move, add, remove."""
        remove, move, add = [], [], []
        for product, checked in plans:
            kept = {}
            for image in current_images[product.pk]:
                if image.sha256 in kept or image.sha256 not in {c.sha256 for c in checked}:
                    remove.append(image.pk)
                else:
                    kept[image.sha256] = image
            for position, item in enumerate(checked):
                image = kept.get(item.sha256)
                if image is None:
                    add.append(_product_image(product, item, position))
                elif image.position != position:
                    image.position = position
                    move.append(image)
        ProductImage.objects.filter(pk__in=remove).delete()
        ProductImage.objects.bulk_update(move, ["position"])
        return ProductImage.objects.bulk_create(add)


def _product_image(product: Product, item: CheckedImage, position: int) -> ProductImage:
    return ProductImage(
        product=product,
        file=item.name,
        sha256=item.sha256,
        width=item.width,
        height=item.height,
        position=position,
    )


def _url_image_checked_store(url: str, *, store: bool) -> CheckedImage:
    return image_checked_store(image_download(url), store=store)


@contextmanager
def _downloads() -> Iterator[ThreadPoolExecutor]:
    # Image URLs download in parallel while the file is read; results are checked at commit.
    pool = ThreadPoolExecutor(settings.IMPORT_URL_WORKERS, thread_name_prefix="import-download")
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


@contextmanager
def _stored_file(field, what: str) -> Iterator[IO[bytes]]:
    try:
        file = field.open("rb")
    except (FileNotFoundError, ValueError):
        raise ImportFileError(f"the uploaded {what} is missing from storage") from None
    try:
        yield file
    finally:
        file.close()


def _stream_size(stream: IO[bytes]) -> int:
    position = stream.tell()
    size = stream.seek(0, 2)
    stream.seek(position)
    return size


def _job_save(job: ImportJob, fields: list[str]) -> None:
    if job.pk is not None:
        job.save(update_fields=[*fields, "updated"])
