from django.db import models
from django.db.models import Q
from pgvector.django import HalfVectorField

from catalog.models import Product, ProductImage


class EmbeddingSpace(models.Model):
    """One trained CLIP: vectors of two spaces are never compared."""

    class Source(models.TextChoices):
        PRETRAINED = "pretrained", "open_clip pretrained tag"
        CHECKPOINT = "checkpoint", "local checkpoint file"
        RANDOM = "random", "fixed-seed random init"

    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        FILLING = "filling"
        ACTIVE = "active"
        RETIRED = "retired"

    name = models.CharField(max_length=120, unique=True)
    architecture = models.CharField(max_length=120)
    source = models.CharField(max_length=20, choices=Source.choices)
    pretrained = models.CharField(max_length=200, blank=True)
    checkpoint = models.CharField(max_length=500, blank=True)
    checkpoint_sha256 = models.CharField(max_length=64, blank=True)
    seed = models.IntegerField(default=0)
    embed_dim = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CANDIDATE)
    metrics = models.JSONField(default=dict, blank=True)
    # Where an interrupted full reindex stopped, so running it again continues from there.
    reindex_cursor = models.JSONField(default=dict, blank=True)
    # Text search drops vector-only hits less similar than this (empty: SEARCH_SIMILARITY_FLOOR).
    similarity_floor = models.FloatField(
        null=True,
        blank=True,
        help_text="cosine similarity under which a text query's image-only hits are dropped; "
        "empty: the SEARCH_SIMILARITY_FLOOR setting",
    )
    # The same for a query none of whose words the catalog knows ("qwerty zxcv"): higher,
    # calibrated against random letter strings (empty: SEARCH_UNKNOWN_WORDS_FLOOR, else the
    # similarity floor).
    unknown_words_floor = models.FloatField(
        null=True,
        blank=True,
        help_text="cosine similarity under which the image-only hits of a query with no "
        "catalog word are dropped; empty: the SEARCH_UNKNOWN_WORDS_FLOOR setting, else the "
        "similarity floor",
    )
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="one_active_space"
            )
        ]

    def __str__(self):
        return self.name

    @property
    def vector_type(self) -> str:
        """The SQL type every query and index of this space casts its vectors to."""
        return f"halfvec({int(self.embed_dim)})"


class ImageEmbedding(models.Model):
    """An image's vector in a space; a row with an error and no vector marks a failed image."""

    image = models.ForeignKey(ProductImage, on_delete=models.CASCADE, related_name="embeddings")
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="+")
    # No fixed dimension: spaces differ; each space's index casts to its own halfvec(n).
    vector = HalfVectorField(null=True)
    # The image content this vector was computed from; a replaced file gets a new vector.
    source_sha256 = models.CharField(max_length=64)
    error = models.TextField(blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "space"], name="one_vector_per_image_space")
        ]

    def __str__(self):
        return f"image {self.image_id} in space {self.space_id}"


class CaptionEmbedding(models.Model):
    """A product caption (title, translated title, description) and its vector in a space."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="captions")
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="+")
    field = models.CharField(max_length=40)  # "title", "title_zh", "description"
    lang = models.CharField(max_length=8)
    text = models.TextField()
    vector = HalfVectorField()
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["product", "space", "field"], name="one_vector_per_caption_space"
            )
        ]

    def __str__(self):
        return f"{self.field} of product {self.product_id} in space {self.space_id}"


class FinetuneRun(models.Model):
    """One fine-tuning of CLIP on the catalog: its options, live progress and outcome."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    options = models.JSONField(default=dict, blank=True)
    source = models.ForeignKey(
        EmbeddingSpace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    space = models.ForeignKey(
        EmbeddingSpace, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    progress = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"fine-tune #{self.pk} ({self.status})"


class ReindexChunk(models.Model):
    """One share of a fanned-out fill of a space: a range (or a list) of image or product ids.

    The chunks of a space are its current reindex: progress and resumption are read from
    them, so any number of workers can share the work and a dead one loses nothing.
    """

    class Kind(models.TextChoices):
        IMAGES = "images"
        CAPTIONS = "captions"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"

    space = models.ForeignKey(
        EmbeddingSpace, on_delete=models.CASCADE, related_name="reindex_chunks"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Every id in [first_id, last_id], or only those in `ids` (a fill of missing vectors).
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    ids = models.JSONField(default=list, blank=True)
    missing_only = models.BooleanField(default=False)
    size = models.PositiveIntegerField()  # ids in the chunk when it was planned (progress)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # The Celery task id (or helper) that holds the claim: its own redelivery may take it back.
    claim_token = models.CharField(max_length=64, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    report = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["space", "kind", "first_id", "last_id"], name="one_chunk_per_space_range"
            )
        ]
        indexes = [models.Index(fields=["space", "status"], name="reindexchunk_space_status")]

    def __str__(self):
        return f"{self.kind} {self.first_id}-{self.last_id} of space {self.space_id}"
