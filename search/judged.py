"""A judged query set: queries with graded products, written as rules over the catalog's own
data, scored against the shop search as shoppers see it (Quepid, Rated Ranking Evaluator and
Elasticsearch's `_rank_eval` keep one the same way).

The file is UTF-8 text, one judgment a line: `query<TAB>rule<TAB>grade`, grade 0-3; blank
lines and `#` comments are skipped, and a comment `# group: NAME` puts the queries first met
after it in that group (for figures per group). A rule is a conjunction of conditions
separated by spaces:

- `sku=`, `brand=`, `category=` (a category slug: it and its descendants), `in_stock=`
  (true/false), `attr.KEY=` (a top-level value of the product's `attributes`, one of a list
  there, or a value of its option KEY: a dress sold in red is a red dress): several values
  OR-ed with `|`; brand and attribute values compare case-insensitively; a value with spaces
  goes in double quotes (`brand="Atlas Thread"`);
- `price<=N`, `price>=N`, `price<N`, `price>N`.

A product's grade for a query is the highest grade of the rules it satisfies (0 if none).
The rule `none` with grade 0, alone for its query, says that the query should find nothing.

Scoring runs `product_search_by_text(query=q, limit=10)`; related products (under the divider)
are not matches. Per query: nDCG@10 (gains 2^grade - 1, discount log2(position + 1), the
ideal from the grades the catalog holds for the query), P@10 (results graded 1+ over 10, or
over the catalog's relevant products when fewer) and zero-result (count 0 while the catalog
has a relevant product). A `none` query scores 1 when the search counts nothing, else 0.
"""

from __future__ import annotations

import math
import operator
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import reduce
from pathlib import Path

from django.db.models import BooleanField, Case, Count, IntegerField, Q, Value, When
from django.db.models.expressions import RawSQL

from catalog.models import Category, Product
from catalog.selectors import category_subtree_ids
from search.pipeline import product_search_by_text

K = 10
MAX_GRADE = 3
NOTHING_RULE = "none"
DEFAULT_GROUP = ""

_GROUP_COMMENT = re.compile(r"#\s*group:\s*(?P<name>.*\S)\s*$")
_CONDITION = re.compile(r"(?P<field>[a-z_]+(?:\.[A-Za-z0-9_]+)?)(?P<op><=|>=|<|>|=)(?P<value>.*)")
_ATTRIBUTE_KEY = re.compile(r"attr\.(?P<key>[A-Za-z0-9_]+)")
_PRICE_LOOKUPS = {"<=": "lte", ">=": "gte", "<": "lt", ">": "gt"}
_FIELDS = "sku, brand, category, in_stock, attr.KEY, price"


class JudgedSetError(ValueError):
    """A judged set file that cannot be read: which line, and why."""


@dataclass(frozen=True)
class Judgment:
    line: int
    rule: str
    grade: int
    condition: Q  # the products of catalog.Product the rule grades


@dataclass(frozen=True)
class JudgedQuery:
    query: str
    group: str
    judgments: tuple[Judgment, ...]
    expects_nothing: bool = False  # its rule is `none`: nothing in the catalog fits it


@dataclass(frozen=True)
class QueryScore:
    query: str
    group: str
    count: int  # relevant products the search counted
    grades: tuple[int, ...]  # the grades of the matches it showed first, in order (<= K)
    relevant: int  # products in the catalog graded 1 or more
    ndcg: float | None  # None: a `none` query, or nothing in the catalog is relevant
    precision: float | None
    zero_result: bool  # counted nothing while the catalog has a relevant product
    expects_nothing: bool

    @property
    def judged(self) -> bool:
        """Whether the query counts in nDCG, P@10 and the zero-result rate."""
        return not self.expects_nothing and self.relevant > 0


@dataclass(frozen=True)
class JudgedSummary:
    queries: int  # judged queries in the means
    ndcg: float | None
    precision: float | None
    zero_result_rate: float | None
    nothing_queries: int  # `none` queries
    nothing_found: float | None  # the share of them that found nothing
    unjudged: tuple[str, ...]  # queries with no relevant product in this catalog


@dataclass(frozen=True)
class JudgedEvaluation:
    overall: JudgedSummary
    groups: dict[str, JudgedSummary]  # by group, in file order (no groups: empty)
    scores: list[QueryScore]


# --- reading -------------------------------------------------------------------------------


class _CategorySubtrees:
    """Category slug -> the ids of it and its descendants, each slug looked up once."""

    def __init__(self) -> None:
        self.ids: dict[str, list[int]] = {}

    def __call__(self, slug: str) -> list[int]:
        if slug not in self.ids:
            category = Category.objects.filter(slug=slug).first()
            if category is None:
                raise ValueError(f"unknown category slug {slug!r}")
            self.ids[slug] = category_subtree_ids(category=category)
        return self.ids[slug]


def _values(field: str, value: str) -> list[str]:
    values = value.split("|")
    if not all(values):
        raise ValueError(f"{field} needs a value (several are separated by |)")
    return values


def _any_of(conditions: Iterable[Q]) -> Q:
    return reduce(operator.or_, conditions)


def _price_condition(op: str, value: str) -> Q:
    if op not in _PRICE_LOOKUPS:
        raise ValueError(f"price takes <=, >=, < or >, not {op!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise ValueError(f"price needs a number, not {value!r}")
    return Q(**{f"price__{_PRICE_LOOKUPS[op]}": number})


def _in_stock_condition(value: str) -> Q:
    flags = {"true": True, "false": False}
    if value.lower() not in flags:
        raise ValueError(f"in_stock is true or false, not {value!r}")
    return Q(in_stock=flags[value.lower()])


def _condition_q(condition: str, *, subtrees: _CategorySubtrees) -> Q:
    """One `field=value|value` or `price<=N` condition as a Q over catalog.Product."""
    match = _CONDITION.fullmatch(condition)
    if match is None:
        raise ValueError(f"{condition!r} is not field=value or price<=N")
    field, op, value = match["field"], match["op"], match["value"]
    if field == "price":
        return _price_condition(op, value)
    attribute = _ATTRIBUTE_KEY.fullmatch(field)
    if field not in ("sku", "brand", "category", "in_stock") and attribute is None:
        raise ValueError(f"unknown field {field!r} (fields: {_FIELDS})")
    if op != "=":
        raise ValueError(f"{field} takes =, not {op!r}")
    if field == "in_stock":
        return _in_stock_condition(value)
    values = _values(field, value)
    if field == "sku":
        return Q(sku__in=values)
    if field == "brand":
        return _any_of(Q(brand__iexact=v) for v in values)
    if field == "category":
        return Q(category_id__in=sorted({pk for v in values for pk in subtrees(v)}))
    # The product's facet keys ("colour=red", lower case, from its attributes and options;
    # catalog migration 0008): a key named like a lookup ("contains") stays a key.
    keys = [f"{attribute['key']}={v}".lower() for v in values]
    return Q(RawSQL("catalog_product.facet_keys && %s::text[]", [keys], BooleanField()))


def rule_q(rule: str, *, subtrees: _CategorySubtrees | None = None) -> Q:
    """A rule (conditions separated by spaces, all of them to hold) as a Q over Product."""
    subtrees = subtrees or _CategorySubtrees()
    try:
        conditions = shlex.split(rule)
    except ValueError as exc:  # an unclosed quote
        raise ValueError(f"rule {rule!r}: {exc}") from None
    if not conditions:
        raise ValueError("the rule is empty")
    result = Q()
    for condition in conditions:
        result &= _condition_q(condition, subtrees=subtrees)
    return result


def _grade(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or int(text) > MAX_GRADE:
        raise ValueError(f"the grade is 0 to {MAX_GRADE}, not {text!r}")
    return int(text)


def _judgment(line: str, number: int, subtrees: _CategorySubtrees) -> tuple[str, Judgment]:
    fields = line.split("\t")
    if len(fields) != 3:
        raise ValueError(f"expected query<TAB>rule<TAB>grade, found {len(fields)} field(s)")
    query, rule, grade_text = (field.strip() for field in fields)
    if not query:
        raise ValueError("the query is empty")
    grade = _grade(grade_text)
    if rule == NOTHING_RULE:
        if grade:
            raise ValueError(f"the rule {NOTHING_RULE!r} goes with grade 0")
        return query, Judgment(number, rule, grade, Q(pk__in=[]))
    return query, Judgment(number, rule, grade, rule_q(rule, subtrees=subtrees))


def _judged_query(query: str, group: str, judgments: list[Judgment]) -> JudgedQuery:
    nothing = [j for j in judgments if j.rule == NOTHING_RULE]
    if nothing and len(judgments) > 1:
        others = next(j.line for j in judgments if j.rule != NOTHING_RULE)
        raise JudgedSetError(
            f"line {max(nothing[0].line, others)}: query {query!r} is judged both "
            f"{NOTHING_RULE!r} (line {nothing[0].line}) and by rules (line {others})"
        )
    return JudgedQuery(query, group, tuple(judgments), expects_nothing=bool(nothing))


def judged_set_parse(lines: Iterable[str]) -> list[JudgedQuery]:
    """The judged queries of a file's lines, in the order of their first line."""
    by_query: dict[str, list[Judgment]] = {}
    groups: dict[str, str] = {}
    group, subtrees = DEFAULT_GROUP, _CategorySubtrees()
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if line.lstrip().startswith("#"):
            heading = _GROUP_COMMENT.fullmatch(line.strip())
            group = heading["name"] if heading else group
            continue
        if not line.strip():
            continue
        try:
            query, judgment = _judgment(line, number, subtrees)
        except ValueError as exc:
            raise JudgedSetError(f"line {number}: {exc}") from None
        if groups.setdefault(query, group) != group:
            raise JudgedSetError(
                f"line {number}: query {query!r} is in group {groups[query]!r} already"
            )
        by_query.setdefault(query, []).append(judgment)
    return [_judged_query(q, groups[q], judgments) for q, judgments in by_query.items()]


def judged_set_read(path: str | Path) -> list[JudgedQuery]:
    """The judged queries of a file (see the module's docstring for its format)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JudgedSetError(f"{path}: {exc}") from None
    return judged_set_parse(text.splitlines())


# --- scoring -------------------------------------------------------------------------------


def discounted_gain(grades: Sequence[int]) -> float:
    """DCG of grades in ranked order: sum of (2^grade - 1) / log2(position + 1)."""
    return sum((2**grade - 1) / math.log2(i + 2) for i, grade in enumerate(grades))


def _at_least(judged: JudgedQuery) -> dict[int, Q]:
    """Grade -> the products graded that or higher, for the grades 1..3 some rule gives."""
    return {
        grade: _any_of(j.condition for j in judged.judgments if j.grade >= grade)
        for grade in range(1, MAX_GRADE + 1)
        if any(j.grade >= grade for j in judged.judgments)
    }


def catalog_grade_counts(judged: JudgedQuery) -> dict[int, int]:
    """Grade -> how many catalog products have it as their best grade for the query (1..3)."""
    conditions = _at_least(judged)
    at_least = (
        Product.objects.aggregate(**{f"g{g}": Count("pk", filter=q) for g, q in conditions.items()})
        if conditions
        else {}
    )
    return {
        g: at_least.get(f"g{g}", 0) - at_least.get(f"g{g + 1}", 0) for g in range(1, MAX_GRADE + 1)
    }


def product_grades(judged: JudgedQuery, product_ids: Sequence[int]) -> dict[int, int]:
    """Product id -> its grade for the query (the best rule it satisfies; 0 if none)."""
    conditions = _at_least(judged)
    if not conditions or not product_ids:
        return {}
    # The highest grade first: Case takes the first that holds.
    whens = [When(conditions[g], then=Value(g)) for g in sorted(conditions, reverse=True)]
    rows = Product.objects.filter(pk__in=product_ids).annotate(
        grade=Case(*whens, default=Value(0), output_field=IntegerField())
    )
    return dict(rows.values_list("pk", "grade"))


def judged_query_score(judged: JudgedQuery, *, understand: bool = True) -> QueryScore:
    """Search the query as a shopper does and score the matches shown against its grades
    (`understand`: as search's own parameter, for a comparison without it)."""
    page = product_search_by_text(query=judged.query, limit=K, understand=understand)
    shown = [hit.product.pk for hit in page.results if not hit.related][:K]
    if judged.expects_nothing:
        return QueryScore(judged.query, judged.group, page.count, (), 0, None, None, False, True)
    graded = product_grades(judged, shown)
    grades = tuple(graded.get(pk, 0) for pk in shown)
    counts = catalog_grade_counts(judged)
    relevant = sum(counts.values())
    ndcg = precision = None
    if relevant:
        ideal = [g for g in sorted(counts, reverse=True) for _ in range(counts[g])][:K]
        ndcg = discounted_gain(grades) / discounted_gain(ideal)
        precision = sum(1 for g in grades if g >= 1) / min(K, relevant)
    return QueryScore(
        query=judged.query,
        group=judged.group,
        count=page.count,
        grades=grades,
        relevant=relevant,
        ndcg=ndcg,
        precision=precision,
        zero_result=bool(relevant) and page.count == 0,
        expects_nothing=False,
    )


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def judged_summary(scores: Sequence[QueryScore]) -> JudgedSummary:
    """Means over the judged queries, and the share of `none` queries that found nothing."""
    judged = [s for s in scores if s.judged]
    nothing = [s for s in scores if s.expects_nothing]
    return JudgedSummary(
        queries=len(judged),
        ndcg=_mean([s.ndcg for s in judged]),
        precision=_mean([s.precision for s in judged]),
        zero_result_rate=_mean([float(s.zero_result) for s in judged]),
        nothing_queries=len(nothing),
        nothing_found=_mean([float(s.count == 0) for s in nothing]),
        unjudged=tuple(s.query for s in scores if not s.judged and not s.expects_nothing),
    )


def judged_set_evaluate(
    queries: Sequence[JudgedQuery], *, understand: bool = True
) -> JudgedEvaluation:
    """Score every judged query against the shop search (the active space), overall and by
    group."""
    scores = [judged_query_score(judged, understand=understand) for judged in queries]
    names = list(dict.fromkeys(s.group for s in scores if s.group != DEFAULT_GROUP))
    return JudgedEvaluation(
        overall=judged_summary(scores),
        groups={name: judged_summary([s for s in scores if s.group == name]) for name in names},
        scores=scores,
    )
