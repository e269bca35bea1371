import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from catalog.storage import import_file_storage


class Category(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    # The name in other languages, {"zh": "连衣裙"}: shoppers search by these too.
    names = models.JSONField(
        "translated names", default=dict, blank=True, help_text='e.g. {"zh": "连衣裙"}'
    )

    class Meta:
        verbose_name_plural = "categories"
        ordering = ["name"]

    def __str__(self):
        return f"{self.parent} > {self.name}" if self.parent_id else self.name


class Product(models.Model):
    """A product shoppers find. With options (Size, Colour) it has variants, and its price,
    `price_max`, `compare_at_price`, `in_stock` and the values of `options` follow from its
    active variants (catalog.services.products_variants_summarise); without options it is
    its own one variant, and those fields are its own."""

    class Status(models.TextChoices):
        ACTIVE = "active", "active (searchable)"
        DRAFT = "draft", "draft (kept, not searchable)"
        ARCHIVED = "archived", "archived (kept, not searchable)"

    sku = models.CharField("SKU", max_length=64, unique=True)
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    brand = models.CharField(max_length=120, blank=True, db_index=True)
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="products"
    )
    price = models.DecimalField(max_digits=12, decimal_places=2)
    price_max = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        editable=False,
        help_text="the highest price of its variants (none without variants)",
    )
    compare_at_price = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="the price before a sale, shown struck through",
    )
    # Each active variant's price, stock and option keys (its `option_keys`), so a search
    # tests "one variant is size M, in stock, 20 to 60" on the product's own row instead
    # of reading its variants (bench/variants.py). Kept by products_variants_summarise.
    variant_offers = models.JSONField(default=list, db_default=[], blank=True, editable=False)
    currency = models.CharField(max_length=3, default="USD")
    in_stock = models.BooleanField(default=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    # Anything else the shop knows: colour, material, translated titles ("title_zh")...
    attributes = models.JSONField(default=dict, blank=True)
    # Values read from its photos that count as entered ones where it has none (confirmed in
    # the admin, or surer than their facet's threshold): kept by catalog.inferred from its
    # InferredAttribute rows. Its facet keys read both, its own `attributes` winning.
    inferred_attributes = models.JSONField(default=dict, db_default={}, blank=True, editable=False)
    # The options its variants differ by, in the shop's order, with their values in the
    # variants' order: [{"name": "Size", "values": ["S", "M"]}]. Empty: no variants.
    options = models.JSONField(default=list, blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.sku} {self.title}"

    def variant_rows(self) -> list[tuple["ProductVariant", list[str]]]:
        """Its active variants, each with its values in the order of the options."""
        names = [option["name"] for option in self.options]
        return [(v, [v.options.get(n, "") for n in names]) for v in self.variants.all() if v.active]


MAX_OPTIONS = 3  # as Shopify and most shop platforms


class ProductVariant(models.Model):
    """One buyable version of a product: its option values, SKU, price, stock and photo.

    A variant gone from a re-imported file is made inactive, never deleted: the search
    log, events and orders may name its SKU.
    """

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="variants")
    sku = models.CharField("SKU", max_length=64, unique=True)
    options = models.JSONField(default=dict, help_text='its option values: {"Size": "M"}')
    price = models.DecimalField(max_digits=12, decimal_places=2)
    compare_at_price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    stock = models.IntegerField(null=True, blank=True, help_text="empty: not tracked")
    # Sellable: stock above zero, stock not tracked, or sold when out of stock.
    in_stock = models.BooleanField(default=True)
    barcode = models.CharField(max_length=64, blank=True)
    image = models.ForeignKey(
        "ProductImage", null=True, blank=True, on_delete=models.SET_NULL, related_name="variants"
    )
    position = models.PositiveSmallIntegerField(default=0)
    active = models.BooleanField(
        default=True, help_text="off: no longer sold (gone from the shop's file); kept for history"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["product_id", "position", "id"]

    def __str__(self):
        values = " / ".join(str(v) for v in self.options.values())
        return f"{self.sku} {values}".strip()


class ProductImage(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    file = models.ImageField(upload_to="products/%Y/%m/")
    sha256 = models.CharField(max_length=64, db_index=True, editable=False)
    width = models.PositiveIntegerField(editable=False, default=0)
    height = models.PositiveIntegerField(editable=False, default=0)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["product_id", "position", "id"]

    def __str__(self):
        return f"{self.product.sku} image {self.position}"


class Facet(models.Model):
    """An option or attribute shown as a facet and filtered by (`attr.<name>=<value>`).

    Without any, every option of the products found is a facet, in the products' order.
    """

    name = models.CharField(
        max_length=100, unique=True, help_text='the option or attribute, e.g. "Size", "material"'
    )
    label = models.CharField(max_length=100, blank=True, help_text="shown; the name if empty")
    position = models.PositiveSmallIntegerField(default=0)
    inferred_threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="a value read from photos at least this sure (0..1) counts as entered without "
        "review; empty: only values confirmed in the admin count",
    )

    class Meta:
        ordering = ["position", "name"]

    def __str__(self):
        return self.label or self.name


class FacetValueAlias(models.Model):
    """Another name for a facet value ("dark blue" is Navy): counted, filtered and
    understood in queries as the value."""

    facet = models.ForeignKey(Facet, on_delete=models.CASCADE, related_name="aliases")
    alias = models.CharField(max_length=100)
    value = models.CharField(max_length=100, help_text="the value it is another name for")

    class Meta:
        ordering = ["facet", "value", "alias"]
        constraints = [
            models.UniqueConstraint(
                models.functions.Lower("alias"), "facet", name="catalog_facet_alias_unique"
            )
        ]
        verbose_name_plural = "facet value aliases"

    def __str__(self):
        return f"{self.alias} → {self.value}"


class InferredAttribute(models.Model):
    """An attribute value read from a product's photos (embeddings.inference), for a product
    that has none: a suggestion until reviewed. It never changes what was entered: it counts
    as a facet value and filter only once confirmed, or when surer than its facet's
    `inferred_threshold`, and only while the product has no value of its own."""

    class Status(models.TextChoices):
        SUGGESTED = "suggested"
        CONFIRMED = "confirmed"
        REJECTED = "rejected"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="inferred")
    name = models.CharField(max_length=100, help_text='the attribute, e.g. "colour"')
    value = models.CharField(max_length=200)
    confidence = models.FloatField(help_text="the model's calibrated probability, 0..1")
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.SUGGESTED, db_index=True
    )
    space = models.CharField(max_length=120, help_text="the embedding space that read it")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-confidence", "id"]
        constraints = [
            models.UniqueConstraint(fields=["product", "name"], name="catalog_inferred_unique")
        ]

    def __str__(self):
        return f"{self.product_id} {self.name}={self.value} ({self.confidence:.2f}, {self.status})"


def import_file_name(instance, filename: str) -> str:
    # Random, never the client's name: nothing about the file is chosen by the uploader.
    return f"imports/{timezone.now():%Y/%m}/{uuid.uuid4().hex}"


class ImportJob(models.Model):
    """One bulk import of a product file: what was asked, how far it got, what it did.

    The counters and `resume_offset` commit in the same transaction as each batch of
    products, so after an interruption they describe exactly what is in the catalog.
    """

    class Format(models.TextChoices):
        CSV = "csv", "CSV (+ ZIP of images)"
        TSV = "tsv", "TSV: text<TAB>base64 image"
        JSONL = "jsonl", "JSON Lines"
        SHOPIFY = "shopify", "Shopify product CSV export"
        WOOCOMMERCE = "woocommerce", "WooCommerce product CSV export"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    format = models.CharField(max_length=16, choices=Format.choices)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    dry_run = models.BooleanField(default=False, help_text="validate only, write nothing")
    # Uploads (admin, API) are kept in private storage until the job is done; the command
    # reads its file in place.
    source = models.FileField(storage=import_file_storage, upload_to=import_file_name, blank=True)
    source_name = models.CharField(max_length=255)
    source_bytes = models.PositiveBigIntegerField(default=0)
    images = models.FileField(storage=import_file_storage, upload_to=import_file_name, blank=True)
    images_name = models.CharField(max_length=255, blank=True)
    files_deleted = models.DateTimeField(
        null=True,
        blank=True,
        help_text="when the uploaded files were deleted (the job was done, or left unfinished "
        "for IMPORT_FILES_KEEP_DAYS)",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Where the next batch starts: everything before it is committed.
    resume_offset = models.PositiveBigIntegerField(default=0)
    resume_line = models.PositiveIntegerField(default=0)
    rows_processed = models.PositiveIntegerField(default=0)
    rows_created = models.PositiveIntegerField(default=0)
    rows_updated = models.PositiveIntegerField(default=0)
    rows_unchanged = models.PositiveIntegerField(default=0)
    rows_failed = models.PositiveIntegerField(default=0)
    images_created = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="why the whole import stopped")
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"import {self.pk} of {self.source_name}"

    @property
    def progress(self) -> float:
        """Fraction of the data file read and committed, 0..1."""
        if self.status == self.Status.DONE:
            return 1.0
        return min(self.resume_offset / self.source_bytes, 1.0) if self.source_bytes else 0.0


class ImportRowError(models.Model):
    """A row that was not imported, and why: one line of the downloadable report."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="row_errors")
    line = models.PositiveIntegerField()
    sku = models.CharField("SKU", max_length=200, blank=True)
    field = models.CharField(max_length=100, blank=True)
    message = models.TextField()

    class Meta:
        ordering = ["job", "line", "id"]
        indexes = [models.Index(fields=["job", "line"])]

    def __str__(self):
        return f"line {self.line} {self.field}: {self.message}"
