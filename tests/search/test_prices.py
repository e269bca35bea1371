"""Price phrases and cheap words in English and Chinese queries: search.prices."""

import random
from decimal import Decimal

import pytest

from search.prices import CHEAP_WORDS, PricePhrase, cheap_spans, price_phrases


def one_phrase(query: str, **kwargs) -> PricePhrase:
    """The query's single price phrase, its span checked against the text it reports."""
    phrases = price_phrases(query, **kwargs)
    assert len(phrases) == 1, phrases
    phrase = phrases[0]
    assert query[phrase.start : phrase.end] == phrase.text
    return phrase


@pytest.mark.parametrize(
    ("query", "text", "max_price", "currency"),
    [
        ("red dress under 50", "under 50", "50", None),
        ("Shoes BELOW $40", "BELOW $40", "40", "USD"),
        ("mugs less than 30", "less than 30", "30", None),
        ("cheaper than 30 euros", "cheaper than 30 euros", "30", "EUR"),
        ("lamp up to 80", "up to 80", "80", None),
        ("at most 80 bucks", "at most 80 bucks", "80", "USD"),
        ("max 80", "max 80", "80", None),
        ("no more than £80 scarf", "no more than £80", "80", "GBP"),
        ("< 50", "< 50", "50", None),
        ("jeans <=50", "<=50", "50", None),
        ("50 or less", "50 or less", "50", None),
        ("tees 50 and under", "50 and under", "50", None),
        ("under 50 dollars", "under 50 dollars", "50", "USD"),
        ("under usd 1,299.50", "under usd 1,299.50", "1299.50", "USD"),
        ("under 1.5k", "under 1.5k", "1500", None),
        ("under ５０", "under ５０", "50", None),  # full-width digits, as Chinese keyboards type
        ("50以下", "50以下", "50", None),
        ("50以内的杯子", "50以内", "50", None),
        ("50元以下连衣裙", "50元以下", "50", "CNY"),
        ("低于50的半身裙", "低于50", "50", None),
        ("小于50", "小于50", "50", None),
        ("不超过50块钱的T恤", "不超过50块钱", "50", "CNY"),
        ("不到50", "不到50", "50", None),
        ("50块以内", "50块以内", "50", "CNY"),
        ("¥100以下", "¥100以下", "100", "CNY"),
        ("1.5万以下的沙发", "1.5万以下", "15000", None),
        ("50美元以下", "50美元以下", "50", "USD"),
    ],
)
def test_upper_bounds(query, text, max_price, currency):
    phrase = one_phrase(query)
    assert (phrase.text, phrase.min_price, phrase.max_price, phrase.currency) == (
        text,
        None,
        Decimal(max_price),
        currency,
    )


@pytest.mark.parametrize(
    ("query", "text", "min_price", "currency"),
    [
        ("watch over 100", "over 100", "100", None),
        ("above 100 GBP", "above 100 GBP", "100", "GBP"),
        ("more than 100", "more than 100", "100", None),
        ("boots from 100", "from 100", "100", None),
        ("at least €100", "at least €100", "100", "EUR"),
        ("min 100", "min 100", "100", None),
        ("starting at $100", "starting at $100", "100", "USD"),
        ("> 100", "> 100", "100", None),
        ("100+ headphones", "100+", "100", None),
        ("100 or more", "100 or more", "100", None),
        ("100 and up", "100 and up", "100", None),
        ("100 RMB and above", "100 RMB and above", "100", "CNY"),
        ("100元以上的大衣", "100元以上", "100", "CNY"),
        ("高于100", "高于100", "100", None),
        ("大于100", "大于100", "100", None),
        ("超过100元", "超过100元", "100", "CNY"),
        ("100以上", "100以上", "100", None),
        ("no less than 100", "no less than 100", "100", None),  # not "less than 100"
        ("不低于100", "不低于100", "100", None),  # not 低于100
    ],
)
def test_lower_bounds(query, text, min_price, currency):
    phrase = one_phrase(query)
    assert (phrase.text, phrase.min_price, phrase.max_price, phrase.currency) == (
        text,
        Decimal(min_price),
        None,
        currency,
    )


@pytest.mark.parametrize(
    ("query", "text", "min_price", "max_price", "currency"),
    [
        ("coats between 100 and 200", "between 100 and 200", "100", "200", None),
        ("100-200", "100-200", "100", "200", None),
        ("boots 100 - 200 leather", "100 - 200", "100", "200", None),
        ("$100 to $200", "$100 to $200", "100", "200", "USD"),
        ("100 to 200 dollars", "100 to 200 dollars", "100", "200", "USD"),
        ("from 100 to 200", "from 100 to 200", "100", "200", None),
        ("From €1,000 to 1.5k", "From €1,000 to 1.5k", "1000", "1500", "EUR"),
        ("100到200", "100到200", "100", "200", None),
        ("100到200元的大衣", "100到200元", "100", "200", "CNY"),
        ("100至200", "100至200", "100", "200", None),
        ("100-200元", "100-200元", "100", "200", "CNY"),
        ("100~200", "100~200", "100", "200", None),
        ("100～200的包", "100～200", "100", "200", None),
        ("between 50 and 10", "between 50 and 10", "10", "50", None),  # swapped
        ("between 20 and 20", "between 20 and 20", "20", "20", None),
    ],
)
def test_ranges(query, text, min_price, max_price, currency):
    phrase = one_phrase(query)
    assert (phrase.text, phrase.min_price, phrase.max_price, phrase.currency) == (
        text,
        Decimal(min_price),
        Decimal(max_price),
        currency,
    )


@pytest.mark.parametrize(
    "query",
    [
        # bare numbers and amounts
        "size 10",
        "iphone 15",
        "DEMO-000123",
        "350 ml",
        "2 pack",
        "$50 shoes",
        # glued to letters, joined into a SKU, or a code
        "SHO-300",
        "A100",
        "under A100",
        "under50",
        "SHO-300-400",
        "under 50kg",
        "SKU 2024-05-01",
        "under 007",
        # measurements, even with a cue word
        "under 2 kg",
        "up to 80% off",
        "under 10 inch tablet",
        "below 12 oz",
        "10-20 cm",
        "from 10 to 20 cm",
        "size 10 or less",
        "size 10-12",
        "toys ages 3+",
        "低于5千克",
        "尺码40以下",
        "100-200毫升",
        # no bound to take: two numbers, an age range, an estimate
        "3 to 5",
        "100 and 200",
        "around 50",
        "50左右",
        # bad numbers
        "under 1e309",
        "under inf",
        "under nan",
        "under -5",
        "under −5",
        "under 10000000000",
        "under 9999999999.999",
        "between $10 and €20",
        "under $50 euros",
        "",
        "under",
        "between and",
    ],
)
def test_not_a_price(query):
    assert price_phrases(query) == []


def test_a_named_currency_makes_a_number_a_price_before_a_unit_word():
    assert price_phrases("under 50 in black") == []  # "in": inches
    assert one_phrase("under $50 in black").max_price == Decimal("50")


@pytest.mark.parametrize(
    ("query", "max_price"),
    [
        ("under 49.99", "49.99"),
        ("under 49.999", "50.00"),  # more than 2 decimals: rounded to cents
        ("under 49.994", "49.99"),
        ("under 0.5", "0.50"),
        ("under 1,299", "1299"),
        ("under 2K", "2000"),
        ("under 9,999,999,999.99", "9999999999.99"),  # Product.price's largest
    ],
)
def test_amounts_are_rounded_to_cents(query, max_price):
    phrase = one_phrase(query)
    assert phrase.max_price == Decimal(max_price)
    assert phrase.max_price.as_tuple().exponent == -2


def test_several_phrases_in_order_without_overlaps():
    query = "over 20 and under 50, also 100到200元"
    phrases = price_phrases(query)
    assert [(p.text, p.min_price, p.max_price) for p in phrases] == [
        ("over 20", Decimal("20"), None),
        ("under 50", None, Decimal("50")),
        ("100到200元", Decimal("100"), Decimal("200")),
    ]
    assert all(query[p.start : p.end] == p.text for p in phrases)


def test_the_longest_phrase_at_a_place_wins():
    assert one_phrase("from 100 to 200").text == "from 100 to 200"  # not "from 100"
    assert one_phrase("低于50元以下").text == "低于50元"  # one phrase, not two overlapping


def test_protected_spans_are_never_part_of_a_phrase():
    query = "under armour under 50"
    phrase = one_phrase(query, protected=[(0, 12)])
    assert (phrase.start, phrase.end, phrase.text) == (13, 21, "under 50")

    query = "air max 90 under 100"
    assert [p.text for p in price_phrases(query)] == ["max 90", "under 100"]
    assert [p.text for p in price_phrases(query, protected=[(0, 10)])] == ["under 100"]
    assert price_phrases(query, protected=[(15, 16)]) == [price_phrases(query)[0]]  # "r 1"


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("便宜的马克杯", ["便宜"]),
        ("Cheapest mugs", ["Cheapest"]),
        ("cheap red shoes", ["cheap"]),
        ("affordable 平价T恤", ["affordable", "平价"]),
        ("budget laptop, inexpensive too", ["budget", "inexpensive"]),
        ("最实惠的低价耳机", ["实惠", "低价"]),
        ("low-cost flights", ["low-cost"]),
        ("cheapskate gifts", []),  # whole English words only
        ("cheaper than 30", []),  # a bound, already a price phrase
        ("cheaper shoes under 50", ["cheaper"]),
        ("", []),
    ],
)
def test_cheap_spans(query, words):
    assert [query[start:end] for start, end in cheap_spans(query)] == words


def test_cheap_spans_skip_protected_spans():
    assert cheap_spans("Cheap Monday jeans", protected=[(0, 12)]) == []
    assert cheap_spans("Cheap Monday jeans, cheap", protected=[(0, 12)]) == [(20, 25)]


def test_cheap_words_cover_both_languages():
    assert {"cheap", "cheapest", "inexpensive", "affordable", "budget"} <= CHEAP_WORDS
    assert {"便宜", "实惠", "平价", "低价"} <= CHEAP_WORDS


JUNK_PIECES = [
    *"0123456789",
    *" ,.-+~$€£¥<>=%#/:'\"",
    *"abcxyzk",
    "under ",
    "over ",
    " to ",
    " and ",
    "between ",
    "from ",
    "1,299",
    "1e309",
    "inf",
    "nan",
    "size",
    "kg",
    "低于",
    "以下",
    "到",
    "元",
    "块",
    "万",
    "的",
    "便宜",
    "🙂",
    "\u200b",
    "\n",
    "Ω",
    "٣",
    "９",
]


def test_junk_never_raises_and_phrases_stay_well_formed():
    shuffle = random.Random(20240601)
    queries = ["".join(shuffle.choices(JUNK_PIECES, k=shuffle.randint(0, 40))) for _ in range(3000)]
    queries += ["!!!?..", "🙂" * 200, " ".join(["under 50 and"] * 200), "9" * 5000, "-" * 300]
    for query in queries:
        phrases = price_phrases(query)
        previous_end = 0
        for phrase in phrases:
            assert previous_end <= phrase.start < phrase.end <= len(query)
            assert query[phrase.start : phrase.end] == phrase.text
            bounds = [b for b in (phrase.min_price, phrase.max_price) if b is not None]
            assert bounds
            assert all(0 <= b <= Decimal("9999999999.99") for b in bounds)
            assert all(b.as_tuple().exponent == -2 for b in bounds)
            assert bounds == sorted(bounds)
            assert phrase.currency in {None, "USD", "EUR", "GBP", "CNY"}
            previous_end = phrase.end
        for start, end in cheap_spans(query, protected=[(0, 3)]):
            assert 3 <= start < end <= len(query)
