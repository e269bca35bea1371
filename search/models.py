"""The search app's data: synonyms and merchandising rules (merchandisers edit them),
and the catalog's own vocabulary and suggestions (kept current as products change).

Typo correction and suggestions read the vocabulary tables, never the catalog itself: the
embedded server has no pg_trgm or fuzzystrmatch, so words are corrected against the
catalog's own words (search.typos), and completions are ranked by how many products (or
searches) stand behind them (search.suggest). search.vocabulary keeps them current.
"""

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from catalog.models import Category, Product
from embeddings.models import EmbeddingSpace
from search.terms import term_key, term_problem

# --- synonyms -----------------------------------------------------------------------------


class SynonymSet(models.Model):
    """Words a shopper may use for the same thing; they widen the text match (search.synonyms).

    Two-way (no root): each term also matches the others ("tee, t-shirt"). One-way: a
    search for `root` also matches the terms, not the reverse ("bag" -> handbag, backpack).
    Terms are stored normalised (search.terms.term_key) by synonym_set_save.
    """

    root = models.CharField(
        "one-way from",
        max_length=100,
        blank=True,
        help_text="one-way: a search for this word also finds the terms, not the reverse; "
        "empty: two-way, every term finds the others",
    )
    terms = ArrayField(
        models.CharField(max_length=100),
        help_text="comma-separated, e.g. “tee, t-shirt”; a term may have several words",
    )
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["root", "terms"]
        indexes = [
            GinIndex(fields=["terms"], name="search_synonym_terms_gin"),
            models.Index(fields=["root"], name="search_synonym_root"),
        ]

    def __str__(self):
        if self.root:
            return f"{self.root} → {', '.join(self.terms)}"
        return " ⇄ ".join(self.terms)

    def clean(self):
        errors = {}
        if self.root.strip() and (problem := term_problem(self.root)):
            errors["root"] = problem
        problems = [p for p in map(term_problem, self.terms or ()) if p]
        self.root = term_key(self.root)
        self.terms = list(dict.fromkeys(term_key(t) for t in self.terms or () if term_key(t)))
        others = [t for t in self.terms if t != self.root]
        if problems:
            errors["terms"] = problems
        elif self.root and not others:
            errors["terms"] = f"A one-way set needs at least one term besides “{self.root}”."
        elif not self.root and len(others) < 2:
            errors["terms"] = (
                "A two-way set needs at least two different terms, e.g. “tee, t-shirt”."
            )
        if errors:
            raise ValidationError(errors)
        self.terms = others


# --- merchandising rules ------------------------------------------------------------------


def max_pin_position() -> int:
    return settings.SEARCH_MAX_RESULTS


def validate_pin_position(value: int) -> None:
    if value is not None and not 1 <= value <= max_pin_position():
        raise ValidationError(
            f"Position must be between 1 and {max_pin_position()} "
            "(the results a search ranks), not %(value)s.",
            params={"value": value},
        )


class MerchandisingRule(models.Model):
    """When a search matches (query and/or category, within a time window), pin, hide,
    boost or bury products (search.rules applies it over the whole ranked window)."""

    class Match(models.TextChoices):
        CONTAINS = "contains", "the query contains these words"
        EXACT = "exact", "the query is exactly this"

    name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    query = models.CharField(
        max_length=200, blank=True, help_text="empty: any query (and photo searches)"
    )
    match = models.CharField(max_length=10, choices=Match.choices, default=Match.CONTAINS)
    category = models.ForeignKey(
        Category,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="applies when the shopper filters by this category or one of its "
        "sub-categories; empty: with or without a category",
    )
    starts_at = models.DateTimeField(null=True, blank=True, help_text="empty: from now on")
    ends_at = models.DateTimeField(null=True, blank=True, help_text="empty: no end")
    # Derived from `query` by merchandising_rule_save, for indexed lookup per search.
    query_key = models.CharField(max_length=200, blank=True, editable=False, db_index=True)
    query_words = ArrayField(models.CharField(max_length=200), default=list, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [GinIndex(fields=["query_words"], name="search_rule_words_gin")]

    def __str__(self):
        return self.name

    def clean(self):
        if self.query and not term_key(self.query):
            raise ValidationError({"query": "The query has no letters or digits."})
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "The end must be after the start."})


class RuleProduct(models.Model):
    """A product a rule pins at a position or hides.

    If the product is deleted, the row stays with `product` empty and its SKU, so the rule
    shows as broken in the admin instead of silently losing the pin.
    """

    class Action(models.TextChoices):
        PIN = "pin", "pin at position"
        HIDE = "hide", "hide"

    rule = models.ForeignKey(MerchandisingRule, on_delete=models.CASCADE, related_name="products")
    action = models.CharField(max_length=4, choices=Action.choices, default=Action.PIN)
    product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    product_sku = models.CharField("SKU", max_length=64, blank=True, editable=False)
    position = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[validate_pin_position],
        help_text="1 = first; pins only",
    )

    class Meta:
        ordering = ["rule_id", "-action", "position", "id"]  # pins first

    def __str__(self):
        what = self.product_sku or (self.product.sku if self.product_id else "?")
        if self.action == self.Action.PIN:
            return f"pin {what} at {self.position}"
        return f"hide {what}"

    @property
    def broken(self) -> bool:
        return self.pk is not None and self.product_id is None

    def clean(self):
        if self.product_id is None and not self.broken:
            raise ValidationError({"product": "Choose a product."})
        if self.action == self.Action.PIN and self.position is None:
            raise ValidationError({"position": "A pin needs a position (1 = first)."})
        if self.action == self.Action.HIDE:
            self.position = None


class RuleBoost(models.Model):
    """Multiplies the fused score of the products with an attribute (bury: divides it)."""

    class Action(models.TextChoices):
        BOOST = "boost"
        BURY = "bury"

    class Kind(models.TextChoices):
        BRAND = "brand"
        CATEGORY = "category"  # and its sub-categories
        IN_STOCK = "in_stock", "in stock"
        OUT_OF_STOCK = "out_of_stock", "out of stock"

    rule = models.ForeignKey(MerchandisingRule, on_delete=models.CASCADE, related_name="boosts")
    action = models.CharField(max_length=5, choices=Action.choices, default=Action.BOOST)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.BRAND)
    brand = models.CharField(max_length=120, blank=True, help_text="for kind “brand”: exact")
    category = models.ForeignKey(
        Category,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="for kind “category”: it and its sub-categories",
    )
    factor = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        default=2,
        validators=[MinValueValidator(1.01), MaxValueValidator(1000)],
        help_text="boost: the score is multiplied by it; bury: divided by it",
    )

    class Meta:
        ordering = ["rule_id", "id"]

    def __str__(self):
        value = {self.Kind.BRAND: self.brand, self.Kind.CATEGORY: self.category}.get(self.kind)
        what = f"{self.get_kind_display()} {value}" if value else self.get_kind_display()
        return f"{self.action} {what} ×{self.factor}"

    def clean(self):
        if self.kind == self.Kind.BRAND and not self.brand.strip():
            raise ValidationError({"brand": "Name the brand to boost or bury."})
        if self.kind == self.Kind.CATEGORY and self.category_id is None:
            raise ValidationError({"category": "Choose the category to boost or bury."})
        if self.kind != self.Kind.BRAND:
            self.brand = ""
        if self.kind != self.Kind.CATEGORY:
            self.category = None


# --- vocabulary and suggestions -----------------------------------------------------------


class VocabularyWord(models.Model):
    """A word of the catalog's titles, brands, categories or SKUs, and in how many products."""

    class Kind(models.TextChoices):
        TITLE = "title"  # titles in every language
        BRAND = "brand"
        CATEGORY = "category"  # names of a product's category and its ancestors
        SKU = "sku"  # the whole SKU, lower case: known, never a correction

    word = models.CharField(max_length=64)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # Products whose texts of this kind contain the word (each product counts once).
    frequency = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["word", "kind"], name="one_vocabulary_word_per_kind")
        ]
        indexes = [
            # Prefix lookups (LIKE 'str%'), whatever the database's collation.
            models.Index(
                fields=["word"], opclasses=["varchar_pattern_ops"], name="vocabulary_word_prefix"
            )
        ]

    def __str__(self):
        return f"{self.word} ({self.kind}, {self.frequency})"


class Suggestion(models.Model):
    """A completion the search box offers: a popular query, a title, a brand, a category."""

    class Kind(models.TextChoices):
        QUERY = "query"
        TITLE = "title"
        BRAND = "brand"
        CATEGORY = "category"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    key = models.CharField(max_length=300)  # folded and spaced: one suggestion per key and kind
    text = models.CharField(max_length=300)  # as shown (the first spelling seen)
    # Products behind it (titles, brands, categories) or searches (queries).
    count = models.IntegerField()
    words = ArrayField(models.CharField(max_length=64), default=list)  # its search words

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "key"], name="one_suggestion_per_kind_key")
        ]

    def __str__(self):
        return f"{self.text} ({self.kind}, {self.count})"


class SuggestionWord(models.Model):
    """One word of a suggestion, with what suggestions are ranked by copied for index order.

    The index (word, count DESC, first DESC, length, suggestion) gives a word's
    suggestions in rank order (the most popular, then those it starts, then the shorter)
    by reading a few index entries, however many suggestions contain the word.
    """

    suggestion = models.ForeignKey(Suggestion, on_delete=models.CASCADE, related_name="+")
    word = models.CharField(max_length=64)
    count = models.IntegerField()  # the suggestion's
    first = models.BooleanField()  # the suggestion's first word
    length = models.IntegerField()  # of the suggestion's text

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["suggestion", "word"], name="one_suggestion_word")
        ]
        indexes = [
            models.Index(
                "word",
                models.F("count").desc(),
                models.F("first").desc(),
                "length",
                "suggestion",
                name="suggestion_word_rank",
            )
        ]

    def __str__(self):
        return f"{self.word} of suggestion {self.suggestion_id}"


class ProductTerms(models.Model):
    """What one product adds to the vocabulary and suggestions, as last counted.

    Recounting a product takes back what it added before and adds what it has now, so
    updates are exact and repeatable. `product_id` is no foreign key: the row outlives a
    deleted product until its counts are taken back.
    """

    product_id = models.BigIntegerField(primary_key=True)
    # {"words": [[kind, word], ...], "phrases": [[kind, key, text], ...]}
    terms = models.JSONField(default=dict)

    def __str__(self):
        return f"terms of product {self.product_id}"


class VocabularyVersion(models.Model):
    """One row, bumped by every vocabulary change: processes reload their speller on a move."""

    version = models.BigIntegerField(default=0)

    def __str__(self):
        return f"vocabulary version {self.version}"


# --- search log and shopper events ---------------------------------------------------------


class RealField(models.FloatField):
    """A 4-byte float (`real`): the logged features need no more precision than that."""

    def db_type(self, connection):
        return "real"


class SearchLog(models.Model):
    """One search as a shopper saw it: what was asked and which products were shown where.

    Nothing personal: no IP address, no user; `session` and `client` are keyed hashes (of
    the front end's `session` parameter or the shop page's own cookie, and of the address).
    The primary key is the `search_id`
    that the response returns and that events name. Rows older than SEARCH_LOG_DAYS are
    deleted by a beat task.
    """

    class Kind(models.TextChoices):
        TEXT = "text"
        PHOTO = "photo"
        SIMILAR = "similar"

    class Channel(models.TextChoices):
        API = "api"
        PAGE = "page"  # the shop's own pages

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    query = models.CharField(max_length=500, blank=True)  # normalised; empty for photos
    # The product whose similar products were asked for (kind "similar").
    source_product_id = models.BigIntegerField(null=True, blank=True)
    filters = models.JSONField(default=dict, blank=True)
    space = models.ForeignKey(
        EmbeddingSpace, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    sort = models.CharField(max_length=20, blank=True)
    offset = models.PositiveIntegerField(default=0)
    # The products shown, in order: product_ids[i] was at position offset + i + 1.
    product_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    result_count = models.PositiveIntegerField(default=0)
    session = models.CharField(max_length=64, blank=True)
    # A keyed hash of the searcher's address (searchlog.client_key), never the address: caps
    # what one client weighs in the judgments; deleted with the row.
    client = models.CharField(max_length=32, blank=True, default="")
    # An interleaved search (search.interleaving): the candidate space merged with `space`,
    # and per shown product which one contributed it (0: `space`, 1: `interleaved_with`,
    # -1: neither, a pinned or related product).
    interleaved_with = models.ForeignKey(
        EmbeddingSpace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    teams = ArrayField(models.SmallIntegerField(), default=list, blank=True)
    # The learned ranker's features of each product shown (search.features.FEATURES, in
    # that order), row after row: what the shopper saw, for training (search.ranker_training).
    # float4, one array in the same INSERT: no second statement, pruned with the row.
    features = ArrayField(RealField(), default=list, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["session", "created"], name="searchlog_session_created"),
            models.Index(fields=["query", "created"], name="searchlog_query_created"),
        ]

    def __str__(self):
        return f"{self.kind} search {self.id}"

    def position_of(self, product_id: int) -> int | None:
        """Where the product was shown (1-based, counting earlier pages), or None."""
        try:
            return self.offset + self.product_ids.index(product_id) + 1
        except ValueError:
            return None


class SearchEvent(models.Model):
    """What a shopper did with a product a search showed; stored once per (search, type,
    product) however often it is sent."""

    class Type(models.TextChoices):
        CLICK = "click"
        ADD_TO_CART = "add_to_cart"
        PURCHASE = "purchase"

    search = models.ForeignKey(SearchLog, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=20, choices=Type.choices)
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField()  # as the search showed it, 1-based
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["search", "type", "product"], name="one_event_per_search_type_product"
            )
        ]

    def __str__(self):
        return f"{self.type} on product {self.product_id} of search {self.search_id}"


# --- interleaving tests -------------------------------------------------------------------


class InterleavingTest(models.Model):
    """An online test of a candidate space against the active one (search.interleaving).

    While it runs, SEARCH_INTERLEAVE_FRACTION of text searches show a team-draft merge of
    both spaces' rankings; the tally is read from the search log (`interleaved_with`,
    `teams`) and its click events, never stored twice. One test at a time.
    """

    class Status(models.TextChoices):
        PREPARING = "preparing"  # the candidate is being filled and indexed
        RUNNING = "running"
        PROMOTED = "promoted"
        STOPPED = "stopped"

    UNFINISHED = (Status.PREPARING, Status.RUNNING)

    candidate = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="+")
    # The active space when the test began; only searches answered from it are merged.
    control = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="+")
    # A test of learned rankers (candidate and control are then the active space): the
    # candidate ranker against the live one when the test began (empty: fusion alone).
    candidate_ranker = models.ForeignKey(
        "Ranker", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    control_ranker = models.ForeignKey(
        "Ranker", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PREPARING)
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)  # searches are merged from then on
    ended = models.DateTimeField(null=True, blank=True)
    decision = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)  # the tally when it ended

    class Meta:
        ordering = ["-created"]
        constraints = [
            # One test at a time: a partial unique index on a constant.
            models.UniqueConstraint(
                models.Value(1),
                condition=models.Q(status__in=["preparing", "running"]),
                name="one_unfinished_interleaving_test",
            )
        ]

    def __str__(self):
        if self.candidate_ranker_id:
            control = self.control_ranker or "fusion"
            return f"ranker {self.candidate_ranker} vs {control} ({self.status})"
        return f"{self.candidate} vs {self.control} ({self.status})"


# --- learned rankers ----------------------------------------------------------------------


class Ranker(models.Model):
    """A learned ranker (LightGBM LambdaMART, search.ranker_training): versioned like
    embedding spaces. At most one is live (`active`); the others are candidates that did
    not go live (yet) or retired ones kept for rollback."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        ACTIVE = "active", "live"
        RETIRED = "retired"

    name = models.CharField(max_length=120, unique=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CANDIDATE)
    # The model in LightGBM's own text format (Booster.model_to_string): portable, diffable.
    model_text = models.TextField()
    # The feature names the model was trained on, in order (search.features.FEATURES then).
    features = ArrayField(models.CharField(max_length=40), default=list)
    # Held-out nDCG@10 against fusion and the live ranker, importance, gates, decision.
    metrics = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )  # the live ranker when it was trained
    created = models.DateTimeField(default=timezone.now)
    activated = models.DateTimeField(null=True, blank=True)  # when it last went live

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="active"), name="one_active_ranker"
            )
        ]

    def __str__(self):
        return self.name
