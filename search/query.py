"""Query analysis, the first stage of a text search: the words of a query and what each
matches, before anything is understood or ranked.

- Words: Latin words split at spaces (punctuation at their ends dropped), Chinese runs
  segmented by jieba ("红色连衣裙" -> 红色, 连衣裙), each with where it lies in the query,
  so that the understanding stage can take price phrases and brand names out of it.
- Word forms: a word matches a product's texts as typed (title words also by prefix and
  inside compounds), by its English stem ("dresses" -> dress, stored beside the words of
  titles and descriptions, catalog migration 0007), and by the names of the product's
  category and its ancestors, translated names too ("mugs" finds everything in Home ›
  Mugs, "家居" everything in Home).
- Stop words: English ones by Postgres's own list (the English stemmer drops them), and
  Chinese function words. They never have to match (unless the query has nothing else).
- Corrections: a word no product matches in any form is corrected against the catalog's
  vocabulary (search.typos), so "stripped" also matches as "striped".
- Synonym sets (search.synonyms): a span with synonyms is one term with every synonym as
  a form.

One statement reads, for every term, how many products it matches (up to
TERM_PRODUCTS_CAP) and the categories it names: the matching strategy (search.matching)
orders its words by that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from catalog.selectors import category_nodes, category_subtree_ids_of
from catalog.text import chinese_word_spans, has_cjk, text_fold
from search.synonyms import synonyms_expand
from search.terms import term_key
from search.typos import max_edits, speller_current
from shop_search.db_routers import read_connection

# Terms a query is matched by at most: a 200-word query is matched by its first words.
MAX_TERMS = 12
# Products counted per term: enough to order words by how many products they match.
TERM_PRODUCTS_CAP = 1000
# Chinese words that carry no product meaning: particles, pronouns, shopping verbs.
_CHINESE_FUNCTION_WORDS = (
    "的 了 和 与 及 或 是 在 有 我 你 他 她 我们 要 想 想要 需要 我要 我想 我想要 给我 想买 "
    "要买 买 购买 找 给 用 一个 一件 一条 一双 一款 个 件 条 双 款 吗 呢 吧 啊 呀 请 帮 帮我 "
    "推荐 什么 哪些 有没有 适合 可以 能 很 最 更 还 也 都 就 这 那 这个 那个 些 把 被 对 为 "
    "从 到 以 之 得 地"
)
CHINESE_STOP_WORDS = frozenset(_CHINESE_FUNCTION_WORDS.split())
_EDGE_PUNCTUATION = re.compile(r"^[^\w$€£¥]+|[^\w%]+$")


@dataclass(frozen=True)
class QueryToken:
    text: str  # as typed
    start: int  # where it lies in the query
    end: int
    chunk: int  # the whitespace-separated chunk it came from


@dataclass(frozen=True)
class QueryTerm:
    """One word of the query (a synonym group: one span) and what it matches."""

    word: str  # as typed; a synonym group's span
    tokens: tuple[int, ...]  # indexes of its tokens
    forms: tuple[str, ...]  # what products may contain: the word, its correction, synonyms
    correction: str | None = None  # the vocabulary word it was corrected to
    synonyms: tuple[str, ...] = ()
    stop: bool = False
    products: int = 0  # products it matches, up to TERM_PRODUCTS_CAP
    category_ids: tuple[int, ...] = ()  # products in these categories match it too
    head_category_ids: tuple[int, ...] = ()  # categories it names as their head noun

    @property
    def known(self) -> bool:
        return self.products > 0


@dataclass(frozen=True)
class QueryAnalysis:
    query: str  # as typed
    tokens: tuple[QueryToken, ...]
    terms: tuple[QueryTerm, ...]

    @property
    def corrections(self) -> tuple[tuple[str, str], ...]:
        """(typed word, vocabulary word) of every corrected word."""
        return tuple((t.word, t.correction) for t in self.terms if t.correction)

    @property
    def corrected_query(self) -> str | None:
        """The query with its corrections, when there were any."""
        if not self.corrections:
            return None
        text, last = "", 0
        for term in self.terms:
            if term.correction:
                token = self.tokens[term.tokens[0]]
                text += self.query[last : token.start] + term.correction
                last = token.end
        return " ".join((text + self.query[last:]).split())

    @property
    def in_vocabulary(self) -> bool:
        """Some word is one the catalog knows, or was corrected to one."""
        return any(t.known and not t.stop for t in self.terms)


def query_tokens(query: str) -> list[QueryToken]:
    """The words of `query` with their places: Latin by spaces, Chinese by jieba."""
    tokens = []
    for chunk, match in enumerate(re.finditer(r"\S+", query)):
        text, offset = match.group(), match.start()
        if has_cjk(text):
            tokens += [
                QueryToken(word, offset + start, offset + end, chunk)
                for word, start, end in chinese_word_spans(text)
            ]
            continue
        head = _EDGE_PUNCTUATION.match(text)
        start = head.end() if head else 0
        end = len(text)
        if tail := _EDGE_PUNCTUATION.search(text[start:]):
            end = start + tail.start()
        if any(character.isalnum() for character in text[start:end]):
            tokens.append(QueryToken(text[start:end], offset + start, offset + end, chunk))
    return tokens


def query_analyse(
    *,
    query: str,
    correct: bool = True,
    skip: frozenset[int] = frozenset(),
    tokens: tuple[QueryToken, ...] | None = None,
) -> QueryAnalysis:
    """The terms of `query` and what each matches; tokens in `skip` (understood as a
    price or a brand) are left out. With `correct`, unknown words get corrections.
    `tokens`: `query_tokens(query)` when the caller has them already."""
    tokens = list(query_tokens(query) if tokens is None else tokens)
    kept = [i for i in range(len(tokens)) if i not in skip]
    terms = _terms_with_synonyms(tokens, kept)[:MAX_TERMS]
    terms = terms_measure(terms)
    if correct:
        fixed = _terms_corrected(terms)
        changed = [i for i, (old, new) in enumerate(zip(terms, fixed, strict=True)) if old != new]
        if changed:  # only the corrected words are measured again
            remeasured = terms_measure([fixed[i] for i in changed])
            terms = list(terms)
            for i, term in zip(changed, remeasured, strict=True):
                terms[i] = term
    return QueryAnalysis(query=query, tokens=tuple(tokens), terms=tuple(terms))


def _terms_with_synonyms(tokens: list[QueryToken], kept: list[int]) -> list[QueryTerm]:
    """One term per kept token, except that a run of tokens with synonyms is one term."""
    words = [tokens[i].text for i in kept]
    expansion = synonyms_expand(query=" ".join(words))
    groups = {group[0]: group[1:] for group in expansion.groups}
    terms, i = [], 0
    while i < len(kept):
        for length in range(min(4, len(kept) - i), 0, -1):
            span = term_key(" ".join(words[i : i + length]))
            if span in groups:
                forms = (span, *groups.pop(span))
                terms.append(
                    QueryTerm(span, tuple(kept[i : i + length]), forms, synonyms=forms[1:])
                )
                i += length
                break
        else:
            terms.append(QueryTerm(words[i], (kept[i],), (text_fold(words[i]),)))
            i += 1
    return terms


def _terms_corrected(terms: list[QueryTerm]) -> list[QueryTerm]:
    """Terms no product matches, corrected to the vocabulary word they are nearest."""
    speller = None
    corrected = []
    for term in terms:
        folded = text_fold(term.word)
        if term.known or term.stop or term.synonyms or not max_edits(folded):
            corrected.append(term)
            continue
        speller = speller or speller_current()
        fixed = speller.correct(folded)
        corrected.append(
            replace(term, forms=(*term.forms, fixed), correction=fixed) if fixed else term
        )
    return corrected


def term_match_sql(index: int, alias: str = "p") -> str:
    """Whether the product `alias` matches term `index` (parameters t<i>_forms, t<i>_cats).

    Only active products match: a draft or archived one has an empty search document
    (catalog migration 0008), and its category does not make it a match either."""
    return (
        f"({alias}.search_document @@ product_search_term(%(t{index}_forms)s) "
        f"OR ({alias}.category_id = ANY(%(t{index}_cats)s) AND {alias}.status = 'active'))"
    )


def term_params(index: int, term: QueryTerm) -> dict:
    return {f"t{index}_forms": list(term.forms), f"t{index}_cats": list(term.category_ids)}


def terms_measure(terms: list[QueryTerm]) -> list[QueryTerm]:
    """Each term with its stop-word flag, the categories it names and the products it
    matches (counted up to TERM_PRODUCTS_CAP), in one statement."""
    if not terms:
        return []
    columns, params = [], {}
    for i, term in enumerate(terms):
        params[f"t{i}_forms"] = list(term.forms)
        params[f"t{i}_word"] = term.word
        columns.append(
            f"""shop_search_is_stop_word(%(t{i}_word)s),
            (SELECT coalesce(array_agg(c.id), '{{}}') FROM catalog_category c
             WHERE c.search_names @@ product_search_term(%(t{i}_forms)s)),
            (SELECT coalesce(array_agg(c.id), '{{}}') FROM catalog_category c
             WHERE c.search_heads @@ product_search_term(%(t{i}_forms)s))"""
        )
    with read_connection().cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(columns), params)
        row = cursor.fetchone()
    nodes = None
    measured = []
    for i, term in enumerate(terms):
        stop, named, heads = row[3 * i : 3 * i + 3]
        stop = stop or term.word in CHINESE_STOP_WORDS
        if named:
            nodes = nodes if nodes is not None else category_nodes()
            named = category_subtree_ids_of(nodes, named)
        measured.append(
            replace(
                term,
                stop=stop,
                category_ids=tuple(named),
                head_category_ids=tuple(sorted(heads)),
            )
        )
    counts = terms_products(measured)
    return [replace(term, products=count) for term, count in zip(measured, counts, strict=True)]


def terms_products(terms: list[QueryTerm]) -> list[int]:
    """How many products each term matches, up to TERM_PRODUCTS_CAP (GIN probes)."""
    columns, params = [], {"cap": TERM_PRODUCTS_CAP}
    for i, term in enumerate(terms):
        params.update(term_params(i, term))
        columns.append(
            f"(SELECT count(*) FROM (SELECT 1 FROM catalog_product p "
            f"WHERE {term_match_sql(i)} LIMIT %(cap)s) hits)"
        )
    with read_connection().cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(columns), params)
        return [int(count) for count in cursor.fetchone()]


# The active products whose SKU, or an active variant's SKU, is %(sku)s (or its upper case):
# a probe of each unique SKU index. `{where}`: more conditions on `p`.
SKU_MATCH_SQL = """
    SELECT p.id AS product_id FROM catalog_product p
    WHERE p.sku IN (%(sku)s, upper(%(sku)s)) AND p.status = 'active'{where}
    UNION
    SELECT p.id FROM catalog_productvariant v JOIN catalog_product p ON p.id = v.product_id
    WHERE v.sku IN (%(sku)s, upper(%(sku)s)) AND v.active AND p.status = 'active'{where}
"""


def query_is_sku(query: str) -> bool:
    """Whether the query is the SKU of a product shoppers see, or of one of its variants."""
    text = query.strip()
    if not text or len(text) > 64:
        return False
    with read_connection().cursor() as cursor:
        cursor.execute(f"SELECT EXISTS ({SKU_MATCH_SQL.format(where='')})", {"sku": text})
        return cursor.fetchone()[0]


def words_known(words: list[str]) -> set[str]:
    """The words that match at least one product's texts: one GIN probe per word."""
    if not words:
        return set()
    with read_connection().cursor() as cursor:
        cursor.execute(
            """
            SELECT w FROM unnest(%s::text[]) w
            WHERE EXISTS (SELECT 1 FROM catalog_product p
                          WHERE p.search_document @@ product_search_term(ARRAY[w]))
            """,
            [words],
        )
        return {row[0] for row in cursor.fetchall()}
