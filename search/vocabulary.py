"""Keeping the vocabulary and the suggestions current as products change.

`vocabulary_update(product_ids=...)` recounts the given products in bulk: what each one
added before (`ProductTerms`) is taken back and what it has now is added, in a few
statements for the whole batch. Only active products count: a draft or archived product
adds nothing (no title, brand or category suggested, no word to correct to), as if gone.
It runs on commit of every catalog change (`vocabulary_on_catalog_change`, connected in
SearchConfig.ready()) and for deleted products; `vocabulary_rebuild` (manage.py
rebuild_vocabulary) recounts every product.

A product adds:
- words (VocabularyWord): of its titles (every language; Chinese by jieba), its brand, its
  category and the category's ancestors, and its SKU, each product once per word and kind;
- phrases (Suggestion): each title, the brand, each category of its path, and a catalog
  stand-in for a popular query, the title's first and last word ("red t-shirt"), until
  a search log provides real ones (search.suggest.POPULAR_QUERY_SOURCES).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from catalog.models import Product
from catalog.selectors import category_ancestor_ids, category_nodes
from catalog.text import text_fold, text_words, word_chunks, words_join
from search.models import ProductTerms, Suggestion, VocabularyWord

MAX_WORD = 64
MAX_PHRASE = 300
# pg_advisory_xact_lock(namespace, product id): one recount of a product at a time.
LOCK_NAMESPACE = 1_769_283


@dataclass
class Terms:
    words: set[tuple[str, str]] = field(default_factory=set)  # (kind, word)
    phrases: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, key) -> text

    def as_json(self) -> dict:
        return {
            "words": sorted(map(list, self.words)),
            "phrases": sorted([kind, key, text] for (kind, key), text in self.phrases.items()),
        }

    @classmethod
    def from_json(cls, data: dict) -> Terms:
        return cls(
            words={(kind, word) for kind, word in data.get("words", [])},
            phrases={(kind, key): text for kind, key, text in data.get("phrases", [])},
        )


def phrase_key(text: str) -> str:
    """How suggestions are told apart: folded, single spaces."""
    return " ".join(text_fold(text).split())


def catalog_query(title: str) -> str | None:
    """A shopper-style query made from a title: its first and last word ("red t-shirt")."""
    words = word_chunks(" ".join(title.split()))
    if len(words) < 3:
        return None
    return words_join([words[0], words[-1]]).lower()


def product_texts(product: Product) -> list[str]:
    """The product's titles: its own and its translated ones (attributes["titles"])."""
    titles = (product.attributes or {}).get("titles") or {}
    extra = titles.values() if isinstance(titles, dict) else []
    return [t for t in [product.title, *extra] if isinstance(t, str) and t.strip()]


def product_terms(product: Product, category_names: Sequence[str]) -> Terms:
    terms = Terms()

    def add_words(kind: str, text: str) -> None:
        terms.words.update((kind, w) for w in text_words(text) if len(w) <= MAX_WORD)

    def add_phrase(kind: str, text: str) -> None:
        text = " ".join(text.split())[:MAX_PHRASE]
        if text:
            terms.phrases.setdefault((kind, phrase_key(text)), text)

    for title in product_texts(product):
        add_words(VocabularyWord.Kind.TITLE, title)
        add_phrase(Suggestion.Kind.TITLE, title)
        if settings.SEARCH_SUGGEST_CATALOG_QUERIES and (query := catalog_query(title)):
            add_phrase(Suggestion.Kind.QUERY, query)
    if product.brand.strip():
        add_words(VocabularyWord.Kind.BRAND, product.brand)
        add_phrase(Suggestion.Kind.BRAND, product.brand)
    for name in category_names:
        add_words(VocabularyWord.Kind.CATEGORY, name)
        add_phrase(Suggestion.Kind.CATEGORY, name)
    sku = product.sku.strip().lower()
    if sku and len(sku) <= MAX_WORD:
        terms.words.add((VocabularyWord.Kind.SKU, sku))
    return terms


def suggestion_words(text: str) -> list[str]:
    """The words a suggestion is found by (each typed word a prefix of one of them)."""
    return list(dict.fromkeys(w for w in text_words(text) if len(w) <= MAX_WORD))


# --- updating -----------------------------------------------------------------------------


def vocabulary_on_catalog_change(*, product_ids: Sequence[int] = (), **kwargs) -> None:
    """Receiver of catalog.signals.catalog_changed: recount the products once they commit."""
    if product_ids:
        ids = list(product_ids)
        transaction.on_commit(lambda: vocabulary_update(product_ids=ids), robust=True)


def vocabulary_on_product_delete(*, instance: Product, **kwargs) -> None:
    """Receiver of post_delete for products: take back what they counted, on commit."""
    pk = instance.pk
    transaction.on_commit(lambda: vocabulary_update(product_ids=[pk]), robust=True)


def vocabulary_update(*, product_ids: Iterable[int]) -> int:
    """Recount these products (gone or hidden ones count nothing); returns how many changed.

    One transaction: products are locked for recounting (advisory locks, in id order),
    their old and new terms compared, and the differences applied to the word and
    suggestion counts in a few statements for the whole batch.
    """
    ids = sorted(set(product_ids))
    if not ids:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, (id %% 2147483647)::int)) "
            "FROM unnest(%s::bigint[]) AS id",
            [LOCK_NAMESPACE, ids],
        )
        old = {
            row.product_id: Terms.from_json(row.terms)
            for row in ProductTerms.objects.filter(product_id__in=ids)
        }
        products = Product.objects.filter(pk__in=ids, status=Product.Status.ACTIVE).select_related(
            "category"
        )
        nodes = category_nodes() if any(p.category_id for p in products) else {}
        new = {}
        for product in products:
            names = [nodes[pk].name for pk in category_ancestor_ids(nodes, product.category_id)]
            new[product.pk] = product_terms(product, names)
        word_deltas: Counter = Counter()
        phrase_deltas: Counter = Counter()
        phrase_texts: dict[tuple[str, str], str] = {}
        changed = []
        for pk in ids:
            before, after = old.get(pk, Terms()), new.get(pk, Terms())
            if before.as_json() == after.as_json():
                continue
            changed.append(pk)
            word_deltas.update(dict.fromkeys(after.words, 1))
            word_deltas.subtract(dict.fromkeys(before.words, 1))
            phrase_deltas.update(dict.fromkeys(after.phrases, 1))
            phrase_deltas.subtract(dict.fromkeys(before.phrases, 1))
            phrase_texts.update(before.phrases)
            phrase_texts.update(after.phrases)
        if not changed:
            return 0
        _words_apply(cursor, word_deltas)
        _phrases_apply(cursor, phrase_deltas, phrase_texts)
        _terms_store(cursor, changed, new)
        cursor.execute(
            "INSERT INTO search_vocabularyversion (id, version) VALUES (1, 1) "
            "ON CONFLICT (id) DO UPDATE SET version = search_vocabularyversion.version + 1"
        )
    return len(changed)


def _words_apply(cursor, deltas: Counter) -> None:
    rows = sorted((word, kind, delta) for (kind, word), delta in deltas.items() if delta)
    if not rows:
        return
    # Rows as one JSON parameter: quoting large arrays client-side costs more than the SQL.
    cursor.execute(
        """
        INSERT INTO search_vocabularyword AS v (word, kind, frequency)
        SELECT r->>0, r->>1, (r->>2)::int FROM jsonb_array_elements(%s::jsonb) r
        ON CONFLICT (word, kind) DO UPDATE SET frequency = v.frequency + EXCLUDED.frequency
        RETURNING v.id, v.frequency
        """,
        [json.dumps(rows, ensure_ascii=False)],
    )
    # A separate statement: one statement cannot see the rows its own upsert changed.
    gone = [pk for pk, frequency in cursor.fetchall() if frequency <= 0]
    if gone:
        cursor.execute("DELETE FROM search_vocabularyword WHERE id = ANY(%s)", [gone])


def _phrases_apply(cursor, deltas: Counter, texts: dict) -> None:
    rows = sorted((kind, key, delta) for (kind, key), delta in deltas.items() if delta)
    if not rows:
        return
    payload = [
        [kind, key, texts[(kind, key)], delta, suggestion_words(texts[(kind, key)])]
        for kind, key, delta in rows
    ]
    cursor.execute(
        """
        INSERT INTO search_suggestion AS s (kind, key, text, count, words)
        SELECT r->>0, r->>1, r->>2, (r->>3)::int,
               ARRAY(SELECT jsonb_array_elements_text(r->4))
        FROM jsonb_array_elements(%s::jsonb) r
        ON CONFLICT (kind, key) DO UPDATE SET count = s.count + EXCLUDED.count
        RETURNING s.id, s.count
        """,
        [json.dumps(payload, ensure_ascii=False)],
    )
    touched = cursor.fetchall()
    gone = sorted(pk for pk, count in touched if count <= 0)
    kept = sorted(pk for pk, count in touched if count > 0)
    if gone:
        cursor.execute("DELETE FROM search_suggestionword WHERE suggestion_id = ANY(%s)", [gone])
        cursor.execute("DELETE FROM search_suggestion WHERE id = ANY(%s)", [gone])
    if kept:
        # Each word row carries its suggestion's count, for the (word, count) index order.
        cursor.execute(
            """
            INSERT INTO search_suggestionword AS sw (suggestion_id, word, count, first, length)
            SELECT s.id, w.word, s.count, w.n = 1, length(s.text)
            FROM search_suggestion s, unnest(s.words) WITH ORDINALITY AS w(word, n)
            WHERE s.id = ANY(%s) AND w.word <> ''
            ORDER BY s.id, w.word
            ON CONFLICT (suggestion_id, word) DO UPDATE SET count = EXCLUDED.count
            """,
            [kept],
        )


def _terms_store(cursor, ids: list[int], new: dict[int, Terms]) -> None:
    present = [pk for pk in ids if pk in new]
    gone = [pk for pk in ids if pk not in new]
    if gone:
        cursor.execute("DELETE FROM search_productterms WHERE product_id = ANY(%s)", [gone])
    if present:
        cursor.execute(
            """
            INSERT INTO search_productterms (product_id, terms)
            SELECT key::bigint, value FROM jsonb_each(%s::jsonb)
            ON CONFLICT (product_id) DO UPDATE SET terms = EXCLUDED.terms
            """,
            [json.dumps({pk: new[pk].as_json() for pk in present}, ensure_ascii=False)],
        )


def vocabulary_rebuild(
    *,
    from_scratch: bool = False,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Recount every product, and take back products that are gone; returns products counted.

    Without `from_scratch` search keeps its suggestions meanwhile (each batch commits on
    its own and only differences are written); with it, the tables are emptied first.
    Category renames reach the vocabulary this way (they send no catalog_changed).
    """
    if from_scratch:
        with transaction.atomic(), connection.cursor() as cursor:
            # Deferred foreign-key checks of this transaction must run before a TRUNCATE.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(
                "TRUNCATE search_suggestionword, search_suggestion, search_vocabularyword, "
                "search_productterms"
            )
    counted, last = 0, 0
    while True:
        ids = list(
            Product.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            break
        vocabulary_update(product_ids=ids)
        counted += len(ids)
        last = ids[-1]
        if progress:
            progress(len(ids))
    gone = list(
        ProductTerms.objects.exclude(product_id__in=Product.objects.values("pk")).values_list(
            "product_id", flat=True
        )
    )
    for start in range(0, len(gone), batch_size):
        vocabulary_update(product_ids=gone[start : start + batch_size])
    return counted
