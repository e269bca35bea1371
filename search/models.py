"""The catalog's own vocabulary and suggestions, kept current as products change.

Typo correction and suggestions read these tables, never the catalog itself: the
embedded server has no pg_trgm or fuzzystrmatch, so words are corrected against the
catalog's own words (search.typos), and completions are ranked by how many products (or
searches) stand behind them (search.suggest). search.vocabulary keeps them current.
"""

from django.contrib.postgres.fields import ArrayField
from django.db import models


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
