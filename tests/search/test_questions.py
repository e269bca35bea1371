"""The question classifier of /api/ask/ on its own test set of phrasings (search/data/questions/
phrasings.tsv): accuracy per type and language, printed; a third language is never guessed."""

from collections import defaultdict

import pytest

from catalog.demo_catalog import CATEGORIES, COLOURS, MATERIALS, PATTERNS
from search.questions import (
    DATA,
    PROTOTYPES,
    ValueLexicon,
    question_classify,
    question_language,
    questions_read,
)

PHRASINGS = questions_read(DATA / "phrasings.tsv")


def demo_lexicon() -> ValueLexicon:
    """The demo catalog's values with their English and Chinese names, as the shop's zero-shot
    attributes list them: the category as its title noun, the audience as its top category."""
    names = {
        "colour": {c.name: (c.name, c.zh) for c in COLOURS.values()},
        "pattern": {p.name: (p.name, p.zh) for p in PATTERNS.values()},
        "material": {m.name: (m.name, m.zh) for m in MATERIALS.values()},
        "category": {c.path[-1]: (c.name, c.zh) for c in CATEGORIES.values()},
        "audience": {"Women": ("women", "女装")},
    }
    return ValueLexicon.build(
        {name: list(values) for name, values in names.items()},
        lambda name, value, lang: names[name][value][lang == "zh"],
    )


def test_the_phrasings_are_not_the_prototypes():
    assert not {p.question for p in PHRASINGS} & {p.question for p in PROTOTYPES}
    assert {p.type for p in PHRASINGS} == {p.type for p in PROTOTYPES}
    assert {p.lang for p in PHRASINGS} == {"en", "zh", "other"}


def test_question_types_on_the_phrasings(capsys):
    lexicon = demo_lexicon()
    right = defaultdict(lambda: [0, 0])
    wrong = []
    for phrasing in PHRASINGS:
        got = question_classify(phrasing.question, lexicon=lexicon)
        ok = got.type == phrasing.type and (
            phrasing.attribute == "" or got.attribute == phrasing.attribute
        )
        right[(phrasing.type, phrasing.lang)][0] += ok
        right[(phrasing.type, phrasing.lang)][1] += 1
        if not ok:
            wrong.append(f"{phrasing.question!r}: {got.type} {got.attribute}".strip())
    with capsys.disabled():
        print("\nquestion type accuracy (keywords and catalog values; no prototypes):")
        for (kind, lang), (hits, total) in sorted(right.items()):
            print(f"  {kind:12} {lang:5} {hits}/{total} = {hits / total:.2f}")
        for line in wrong:
            print("  missed:", line)
    total = sum(t for _, t in right.values())
    assert sum(h for h, _ in right.values()) / total >= 0.9
    # A third language is never answered as if it were English or Chinese.
    assert right[("unsupported", "other")][0] == right[("unsupported", "other")][1]


@pytest.mark.parametrize(
    ("question", "lang"),
    [
        ("图中服装是什么颜色?", "zh"),
        ("what material is this?", "en"),
        ("red cotton t-shirt", "en"),
        ("Is this T-shirt red?", "en"),
        ("T恤是红色的吗", "zh"),
        ("¿Es de algodón?", ""),
        ("Ist das rot?", ""),
        ("これは赤いですか", ""),
        ("xkcd qwerty", ""),
    ],
)
def test_question_language(question, lang):
    assert question_language(question, demo_lexicon()) == lang


def test_a_yes_no_question_names_the_value_that_is_not_the_thing_itself():
    lexicon = demo_lexicon()
    got = question_classify("Is this dress striped?", lexicon=lexicon)
    assert (got.type, got.attribute, got.value) == ("yes_no", "pattern", "striped")
    got = question_classify("这双皮鞋是黑色的吗？", lexicon=lexicon)
    assert (got.type, got.attribute, got.value, got.lang) == ("yes_no", "colour", "black", "zh")
    got = question_classify("是皮鞋吗", lexicon=lexicon)  # the longer name wins: not "皮"
    assert (got.attribute, got.value) == ("category", "Leather Shoes")


@pytest.mark.django_db
def test_what_no_keyword_places_goes_to_the_nearest_prototypes_or_is_unsupported():
    from embeddings.spaces import space_active
    from search.questions import PROTOTYPE_MARGIN, prototype_vectors

    space = space_active()
    vectors = prototype_vectors(space)
    assert vectors.shape == (len(PROTOTYPES), space.embed_dim)
    assert prototype_vectors(space) is vectors  # encoded once per space, then cached
    decided = {}
    for prototype in PROTOTYPES:
        got = question_classify(prototype.question, lexicon=ValueLexicon(), space=space)
        if got.by != "prototypes":
            continue
        # A prototype's own words are nearest itself: its type, unless another type's
        # prototype is within the margin (then no guess), and yes/no needs a catalog value.
        similarity = vectors @ vectors[PROTOTYPES.index(prototype)]
        others = [p.type != prototype.type for p in PROTOTYPES]
        rival = similarity[others].max()
        close = similarity.max() - rival < PROTOTYPE_MARGIN or prototype.type == "yes_no"
        assert got.type == ("unsupported" if close else prototype.type), prototype
        decided[prototype.question] = got.type
    print(f"\n{len(decided)} prototypes left to the text tower: {decided}")
    assert decided  # the path is exercised
