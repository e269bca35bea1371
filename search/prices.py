"""Price phrases in a shopper's query, English and Chinese: Django-free.

`price_phrases("red dress under $50")` finds "under $50" (max_price 50, USD), so the caller
can turn it into a price filter and search the remaining words. Understood, case-insensitive:

- upper bounds: "under 50", "below $40", "less than 30", "cheaper than 30", "up to 80",
  "at most 80", "max 80", "no more than 80", "< 50", "<= 50", "50 or less", "50 and under",
  "50 max", 低于50, 小于50, 不超过50, 不到50, 50以下, 50以内, 50元以下, 50块以内;
- lower bounds: "over 100", "above 100", "more than 100", "from 100", "at least 100",
  "min 100", "starting at 100", "> 100", "100+", "100 or more", "100 and up", 高于100,
  大于100, 超过100, 100以上, 100元以上;
- ranges: "between 100 and 200", "from 100 to 200", "100-200", "100 - 200", "100~200",
  "$100 to $200", 100到200, 100至200, 100-200元 (swapped ends are put in order);
- amounts: 50, 49.99, 1,299, 1,299.50, 1.5k, 1.5万, rounded to cents, with a currency sign
  or word before or after ("$50", "50 dollars", "usd 50", "50元", "50块钱", "€50");
- words that ask for low prices without a number (CHEAP_WORDS: "cheap", 便宜 ...).

Every bound is inclusive: "under 50" keeps a product at 50.00, the price shoppers expect
to see. Chinese is matched inside runs without spaces (低于50的半身裙 -> 低于50).

Deliberately not understood (no phrase rather than a wrong filter):
- a bare number or amount ("size 10", "iphone 15", "$50"): a model, a size or a wish for
  "about $50", never a bound;
- "100 to 200" with neither a currency nor "from"/"between": ages and sizes read that way
  ("toys 3 to 5"); "around 50", 50左右: no bound to take;
- a number glued to letters or joined by a hyphen to a word ("A100", "SHO-300",
  "DEMO-000123"), one with a leading zero ("05", "007": codes), a negative one
  ("under -5"), one over Product.price's 9,999,999,999.99, "1e309", "inf";
- a number after "size"/"age"/尺码 or before a unit ("under 2 kg", "up to 80%", "under 50
  in black": "in" is inches) unless a currency is named ("under $50 in black");
- two currencies in one range ("between $10 and €20"); Chinese numerals (五十元).

Ambiguities left to the caller: "pounds" is read as GBP ("under 3 pounds" may mean weight),
and a model name reads as a bound ("Air Max 90": "max 90") unless passed as `protected`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from catalog.text import CJK


@dataclass(frozen=True)
class PricePhrase:
    start: int  # character span of the phrase in the query string given
    end: int
    text: str  # query[start:end], the words it came from, as typed
    min_price: Decimal | None
    max_price: Decimal | None
    currency: str | None  # ISO code when a sign or word named one, else None


# Product.price is DecimalField(max_digits=12, decimal_places=2).
_MAX_PRICE = Decimal("9999999999.99")
_CENT = Decimal("0.01")

# How a currency is written (case-folded) -> its ISO code. "¥" is yuan: the shop's Chinese
# shoppers mean 人民币 by it.
_CURRENCIES = {
    **dict.fromkeys(("$", "us$", "usd", "dollar", "dollars", "bucks", "美元", "美金"), "USD"),
    **dict.fromkeys(("€", "eur", "euro", "euros", "欧元"), "EUR"),
    **dict.fromkeys(("£", "gbp", "pound", "pounds", "英镑"), "GBP"),
    **dict.fromkeys(
        ("¥", "￥", "元", "块", "块钱", "rmb", "cny", "yuan", "人民币"),
        "CNY",
    ),
}
_MULTIPLIERS = {"k": 1000, "千": 1000, "万": 10000}

# Cue words before or after an amount -> the bound they set ("max": max_price).
_CUES_BEFORE = {
    **dict.fromkeys(
        (
            "under", "below", "less than", "cheaper than", "lower than", "up to", "at most",
            "max", "maximum", "no more than", "not more than", "not over", "<", "<=", "≤",
            "低于", "小于", "不超过", "不到", "少于", "不高于", "最多",
        ),
        "max",
    ),
    **dict.fromkeys(
        (
            "over", "above", "more than", "greater than", "higher than", "from", "at least",
            "min", "minimum", "starting at", "starting from", "starts at", "no less than",
            ">", ">=", "≥", "高于", "大于", "超过", "多于", "不低于", "至少",
        ),
        "min",
    ),
}  # fmt: skip
_CUES_AFTER = {
    **dict.fromkeys(
        (
            "or less", "or under", "or below", "or lower", "and under", "and below", "max",
            "以下", "以内", "之内", "及以下",
        ),
        "max",
    ),
    **dict.fromkeys(
        (
            "+", "or more", "or above", "or over", "or higher", "and up", "and above",
            "and over", "以上", "及以上",
        ),
        "min",
    ),
}  # fmt: skip

# A number right after these measures something else: "size 10", "ages 3+", 尺码40以下.
_MEASURE_WORDS = ("size", "sizes", "sz", "age", "ages", "aged", "尺码", "尺寸", "码")
# ... and so does one right before a unit: "under 2 kg", "up to 80%", "100-200毫升".
_UNITS = (
    "cm", "mm", "m", "km", "inch", "inches", "in", '"', "″", "'", "ft", "ml", "l", "kg",
    "g", "lb", "lbs", "oz", "gb", "tb", "mb", "mah", "w", "v", "pcs", "pc", "pack", "packs",
    "x", "%", "°", "years", "year", "yrs", "months", "厘米", "毫米", "千米", "公里", "米",
    "英寸", "寸", "毫升", "升", "千克", "公斤", "克", "斤", "码", "件", "个", "包", "瓦",
    "伏", "岁", "度",
)  # fmt: skip

CHEAP_WORDS = frozenset(
    {"cheap", "cheaper", "cheapest", "inexpensive", "affordable", "budget", "bargain"}
    | {"low-cost", "便宜", "实惠", "平价", "低价", "廉价", "划算"}
)

# A letter, digit or underscore of a script written with spaces: a number touching one is
# part of a word ("A100", "1e309"); Chinese characters are not, their runs have no spaces.
# Case-sensitive inside (no letter case differs in it): folding the class's ranges for
# IGNORECASE made importing this module take 1.7 s.
_GLUE = rf"(?-i:[^\W{CJK}])"


def _alternation(words: Iterable[str]) -> str:
    """One regex alternative per word, longest first ("<=" before "<"); Latin words whole
    ("in" is not inside "inch"), "+" not before a digit ("5+3"), Chinese ones anywhere."""
    alternatives = []
    for word in sorted(words, key=len, reverse=True):
        alternative = r"\s+".join(re.escape(part) for part in word.split())
        if word[0].isascii() and word[0].isalpha():
            alternative = rf"(?<!{_GLUE}){alternative}"
        if word[-1].isascii() and (word[-1].isalpha() or word == "+"):
            alternative = rf"{alternative}(?!{_GLUE})"
        alternatives.append(alternative)
    return "|".join(alternatives)


_CURRENCY = _alternation(_CURRENCIES)
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"  # 1,299.50 or 1299.5
# Not the tail of a word, a decimal, a SKU ("SHO-300") or a negative number ("-5", "−5").
_NOT_GLUED_BEFORE = rf"(?<![.,:/#\-−])(?<!{_GLUE})"
# Not the head of a word, a decimal or a compound ("50kg", "1,29", "50-60cm", "300-A").
_NOT_GLUED_AFTER = rf"(?!{_GLUE}|[.,:/\-−]{_GLUE})"


def _amount(name: str, *, lead: str = _NOT_GLUED_BEFORE, trail: str = _NOT_GLUED_AFTER) -> str:
    """A number with its multiplier and currency, in groups named after `name`."""
    return rf"""
        (?:(?P<{name}_before>{_CURRENCY})\s*)?          # $50, usd 50
        {lead} (?P<{name}>{_NUMBER})
        (?P<{name}_times>[k千万](?!{_GLUE}))? {trail}    # 1.5k, 1.5万; not 5kg
        (?:\s*(?P<{name}_after>{_CURRENCY}))?           # 50 dollars, 50元
    """


_FLAGS = re.VERBOSE | re.IGNORECASE


@dataclass(frozen=True)
class _Patterns:
    bound_before: re.Pattern[str]
    bound_after: re.Pattern[str]
    range: re.Pattern[str]
    measure_before: re.Pattern[str]
    unit_after: re.Pattern[str]
    cheap: re.Pattern[str]


@functools.cache
def _patterns() -> _Patterns:
    """Compiled on first use, not on import: they take over half a second (the CJK class in
    every word's lookaround), which every process importing search (`migrate`, a worker, the
    demo's start) would pay; a web process pays it once, at its first search."""
    return _Patterns(
        bound_before=re.compile(
            rf"(?P<cue>{_alternation(_CUES_BEFORE)}) \s* {_amount('amount')}", _FLAGS
        ),
        bound_after=re.compile(
            rf"{_amount('amount')} \s* (?P<cue>{_alternation(_CUES_AFTER)})", _FLAGS
        ),
        range=re.compile(
            rf"""
            (?:(?P<cue>{_alternation(("between", "from", "从"))}) \s*)?
            {_amount("low", trail=rf"(?!{_GLUE}|[.,:/]{_GLUE})")}  # 100-200: the hyphen joins
            \s* (?P<joiner>{_alternation(("and", "to", "-", "–", "—", "~", "～", "到", "至"))}) \s*
            {_amount("high", lead=rf"(?<![.,:/#−])(?<!{_GLUE})")}
            """,
            _FLAGS,
        ),
        measure_before=re.compile(rf"(?:{_alternation(_MEASURE_WORDS)})\s*\Z", _FLAGS),
        unit_after=re.compile(rf"\+?\s*(?:{_alternation(_UNITS)})", _FLAGS),
        cheap=re.compile(_alternation(CHEAP_WORDS), _FLAGS),
    )


# A candidate phrase: its span and phrase, or None where its numbers measure something else
# ("from 10 to 20 cm"): then no phrase may overlap it, not even "from 10".
_Candidate = tuple[int, int, PricePhrase | None]


def price_phrases(query: str, *, protected: Sequence[tuple[int, int]] = ()) -> list[PricePhrase]:
    """Price phrases in `query`, in order, never overlapping each other or a `protected` span
    (spans the caller already understood as something else, e.g. a brand name)."""
    patterns = _patterns()
    candidates = [
        *(_bound(query, m, _CUES_BEFORE) for m in patterns.bound_before.finditer(query)),
        *(_bound(query, m, _CUES_AFTER) for m in patterns.bound_after.finditer(query)),
        *(_range(query, m) for m in patterns.range.finditer(query)),
    ]
    phrases = []
    taken_until = 0  # where the last phrase (or measurement) taken ends
    # Leftmost first, then longest: "from 100 to 200" beats "from 100", "no more than 80"
    # beats "more than 80".
    for start, end, phrase in sorted(filter(None, candidates), key=lambda c: (c[0], -c[1])):
        if start < taken_until or _overlaps(start, end, protected):
            continue
        taken_until = end
        if phrase is not None:
            phrases.append(phrase)
    return phrases


def cheap_spans(query: str, *, protected: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Where CHEAP_WORDS are in `query`, outside `protected` spans and price phrases
    ("cheaper than 30" is a bound, not a preference); Chinese ones inside runs (便宜的马克杯)."""
    phrases = price_phrases(query, protected=protected)
    taken = [*protected, *((phrase.start, phrase.end) for phrase in phrases)]
    return [m.span() for m in _patterns().cheap.finditer(query) if not _overlaps(*m.span(), taken)]


def _bound(query: str, m: re.Match[str], cues: dict[str, str]) -> _Candidate | None:
    bound = cues.get(" ".join(m["cue"].casefold().split()))
    read = _read(m, ("amount",))
    if bound is None or read is None:
        return None
    (value,), currency = read
    low, high = (value, None) if bound == "min" else (None, value)
    return _candidate(query, m, ("amount",), currency, low, high)


def _range(query: str, m: re.Match[str]) -> _Candidate | None:
    read = _read(m, ("low", "high"))
    if read is None:
        return None
    (low, high), currency = read
    cue, joiner = (m["cue"] or "").casefold(), m["joiner"].casefold()
    if joiner == "and" and cue != "between":
        return None  # "100 and 200": two numbers
    if joiner == "to" and not cue and currency is None:
        return None  # "toys 3 to 5": ages or sizes as often as prices
    return _candidate(query, m, ("low", "high"), currency, min(low, high), max(low, high))


def _read(m: re.Match[str], names: tuple[str, ...]) -> tuple[list[Decimal], str | None] | None:
    """The amounts' values and their one currency; None when one is no price or two
    currencies differ ("between $10 and €20")."""
    values = []
    currencies = set()
    for name in names:
        value = _price(m[name], m[f"{name}_times"])
        if value is None:
            return None
        values.append(value)
        for written in (m[f"{name}_before"], m[f"{name}_after"]):
            if written:  # .get: IGNORECASE also matches what casefold maps elsewhere
                currencies.add(_CURRENCIES.get(written.casefold()))
    if len(currencies) > 1 or None in currencies:
        return None
    return values, next(iter(currencies), None)


def _price(number: str, times: str | None) -> Decimal | None:
    """`number` (times its multiplier) rounded to cents; None when Product.price can't hold
    it or it is a code ("007")."""
    digits = number.replace(",", "")
    if int(digits[0]) == 0 and digits[1:2].isdigit():
        return None
    value = Decimal(digits) * _MULTIPLIERS.get((times or "").casefold(), 1)
    if value > _MAX_PRICE:  # before rounding: quantize would overflow Decimal's precision
        return None
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def _candidate(
    query: str,
    m: re.Match[str],
    names: tuple[str, ...],
    currency: str | None,
    low: Decimal | None,
    high: Decimal | None,
) -> _Candidate:
    start, end = m.span()
    if currency is None and _measures(query, m, names):
        return start, end, None  # a named currency wins: "under $50 in black" is a price
    return start, end, PricePhrase(start, end, query[start:end], low, high, currency)


def _measures(query: str, m: re.Match[str], names: tuple[str, ...]) -> bool:
    """A number after "size" or before a unit: "size 10-12", "under 2 kg", "低于5千克"."""
    for name in names:
        # A short window: a query of many numbers stays linear.
        if _patterns().measure_before.search(query, max(0, m.start(name) - 16), m.start(name)):
            return True
        # Both before and after a multiplier: 5千克 is 5 kg, not 5,000 g.
        ends = {m.end(name), m.end(f"{name}_times")} - {-1}
        if any(_patterns().unit_after.match(query, end) for end in ends):
            return True
    return False


def _overlaps(start: int, end: int, spans: Iterable[tuple[int, int]]) -> bool:
    return any(start < span_end and span_start < end for span_start, span_end in spans)
