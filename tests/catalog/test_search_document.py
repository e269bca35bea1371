"""The search document (catalog migration 0006): folded accents, words inside compounds."""

import pytest
from django.db import connection

from catalog.models import Product
from catalog.text import FOLD_FROM, LIGATURES, text_fold, text_segment, text_words

pytestmark = pytest.mark.django_db


def matching(query: str) -> set[str]:
    return set(
        Product.objects.extra(
            where=["search_document @@ product_search_query(%s, false)"], params=[query]
        ).values_list("title", flat=True)
    )


def test_sql_and_python_fold_accents_alike():
    sample = FOLD_FROM + "".join(LIGATURES) + " Crème Brûlée, CAFÉ, ｓｔｒｉｐｅｄ, ﬁne"
    with connection.cursor() as cursor:
        cursor.execute("SELECT shop_search_fold(%s)", [sample])
        assert cursor.fetchone()[0] == text_fold(sample)
    assert text_fold("Crème Brûlée, CAFÉ") == "creme brulee, cafe"


@pytest.mark.parametrize(
    ("query", "titles"),
    [
        ("cafe", {"Café au lait mug", "Cafe racer jacket"}),
        ("café", {"Café au lait mug", "Cafe racer jacket"}),
        ("CAFÉ", {"Café au lait mug", "Cafe racer jacket"}),
        ("creme", {"Crème linen shirt"}),
        ("shirt", {"Crème linen shirt", "Grey sweatshirt", "Red t-shirt"}),  # inside compounds
        ("sweat", {"Grey sweatshirt"}),  # a prefix, as before
        ("bag", {"Leather handbag"}),
        ("ring", {"Silver earring"}),  # "spring" and "string" keep no tail "ring"
        ("hirts", set()),
    ],
)
def test_accents_fold_and_words_inside_compounds_match(make_product, query, titles):
    for title in (
        "Café au lait mug",
        "Cafe racer jacket",
        "Crème linen shirt",
        "Grey sweatshirt",
        "Red t-shirt",
        "Leather handbag",
        "Silver earring",
        "Spring string dress",
    ):
        make_product(title=title)
    assert matching(query) == titles


def test_whole_words_rank_above_words_inside_compounds(make_product):
    compound = make_product(title="Grey sweatshirt")
    whole = make_product(title="Grey shirt")
    ranked = list(
        Product.objects.extra(
            select={"rank": "ts_rank(search_document, product_search_query(%s, true), 1)"},
            select_params=["shirt"],
        )
        .filter(pk__in=[compound.pk, whole.pk])
        .order_by("-rank")
        .values_list("pk", flat=True)
    )
    assert ranked == [whole.pk, compound.pk]


def test_chinese_is_segmented_into_words():
    assert text_segment("红色条纹连衣裙") == "红色 条纹 连衣裙"
    assert text_words("红色条纹棉质T恤 Red T-Shirt") == [
        "红色", "条纹", "棉质", "t恤", "red", "t", "shirt", "tshirt"
    ]  # fmt: skip


def test_a_query_of_several_phrasings_matches_any_of_them(make_product):
    striped = make_product(title="Red striped shirt")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM catalog_product "
            "WHERE search_document @@ product_search_query_any(%s, false)",
            [["stripped shirt", "striped shirt"]],
        )
        assert [row[0] for row in cursor.fetchall()] == [striped.pk]
        cursor.execute("SELECT product_search_query_any(%s, false)", [["!!!", "???"]])
        assert cursor.fetchone()[0] is None
