"""The vocabulary and suggestions follow the catalog: created, edited, deleted products."""

import pytest
from django.core.management import call_command

from catalog.models import Category, Product
from catalog.services import category_get_or_create_path, product_save
from search.models import ProductTerms, Suggestion, VocabularyWord

pytestmark = pytest.mark.django_db


def words(kind=None) -> dict[tuple[str, str], int]:
    rows = VocabularyWord.objects.all()
    if kind:
        rows = rows.filter(kind=kind)
    return {(w.kind, w.word): w.frequency for w in rows}


def suggestions() -> dict[tuple[str, str], int]:
    return {(s.kind, s.text): s.count for s in Suggestion.objects.all()}


def test_new_products_add_their_words_and_suggestions_on_commit(catalog_shop):
    vocabulary = words()
    assert vocabulary[("title", "striped")] == 2
    assert vocabulary[("title", "red")] == 2
    assert vocabulary[("title", "tshirt")] == 2  # hyphenated words joined, as the document does
    assert vocabulary[("title", "连衣裙")] == 2  # Chinese titles by jieba's words
    assert vocabulary[("title", "t恤")] == 2
    assert vocabulary[("brand", "stepwell")] == 2
    assert vocabulary[("category", "clothing")] == 4  # the category's ancestors count too
    assert vocabulary[("sku", "sho-300")] == 1
    shown = suggestions()
    assert shown[("title", "Red striped T-Shirt")] == 1
    assert shown[("title", "红色条纹T恤")] == 1
    assert shown[("brand", "Acme")] == 2
    assert shown[("category", "Clothing")] == 4
    assert shown[("category", "T-Shirts")] == 2
    assert shown[("query", "red t-shirt")] == 1  # a title's first and last word
    assert shown[("query", "红色t恤")] == 1


def test_nothing_is_counted_for_a_change_that_rolls_back(make_product):
    make_product(title="Velvet cushion")  # outside a captured commit: never committed
    assert not VocabularyWord.objects.filter(word="velvet").exists()


def test_edits_move_the_counts_and_unused_words_disappear(catalog_shop, embed_on_commit):
    shoes = catalog_shop["SHO-300"]
    shoes.title, shoes.brand = "Black patent loafers", "Acme"
    shoes.category = category_get_or_create_path(["Shoes", "Loafers"])
    with embed_on_commit():
        product_save(product=shoes, changed_fields=["title", "brand", "category"])
    vocabulary = words()
    assert vocabulary[("title", "loafers")] == 1
    assert ("title", "leather") not in vocabulary  # only SHO-300 had it
    assert vocabulary[("title", "black")] == 1
    assert vocabulary[("brand", "acme")] == 3
    assert vocabulary[("brand", "stepwell")] == 1
    assert vocabulary[("category", "loafers")] == 1
    shown = suggestions()
    assert ("title", "Black leather shoes") not in shown
    assert shown[("title", "Black patent loafers")] == 1
    assert shown[("brand", "Acme")] == 3
    assert shown[("category", "Shoes")] == 2


def test_deleted_products_are_taken_back(catalog_shop, embed_on_commit):
    with embed_on_commit():
        Product.objects.filter(sku__in=["SHO-300", "SHO-301"]).delete()
    vocabulary = words()
    assert ("brand", "stepwell") not in vocabulary
    assert ("sku", "sho-300") not in vocabulary
    assert ("category", "shoes") not in vocabulary
    assert ("brand", "Stepwell") not in suggestions()
    assert ProductTerms.objects.count() == 4


def test_rebuild_recounts_what_no_signal_reported(catalog_shop, capsys):
    """Category renames and writes that bypass the services reach it through a rebuild."""
    incremental = (words(), suggestions())
    Category.objects.filter(slug="shoes").update(name="Footwear")
    Product.objects.filter(sku="TEE-101").update(brand="Plainwear")
    VocabularyWord.objects.filter(word="red").update(frequency=99)  # drifted somehow
    call_command("rebuild_vocabulary", verbosity=0)
    vocabulary = words()
    assert vocabulary[("category", "footwear")] == 2
    assert ("category", "shoes") not in vocabulary
    assert vocabulary[("brand", "plainwear")] == 1
    assert vocabulary[("title", "red")] == 99  # recounting in place only writes differences
    call_command("rebuild_vocabulary", "--from-scratch", verbosity=0)
    assert words()[("title", "red")] == 2
    Category.objects.filter(slug="shoes").update(name="Shoes")
    Product.objects.filter(sku="TEE-101").update(brand="Basics")
    call_command("rebuild_vocabulary")
    assert (words(), suggestions()) == incremental
    assert "Counted 6 products" in capsys.readouterr().out
    call_command("rebuild_vocabulary", "--if-empty")  # counted already: nothing to do
    assert capsys.readouterr().out == ""


def test_a_catalog_loaded_without_signals_is_counted_once(db):
    from catalog.services import demo_catalog_load

    demo_catalog_load(count=24, embed=False)  # what prepare_demo does before training
    assert not VocabularyWord.objects.exists()
    call_command("rebuild_vocabulary", "--if-empty", verbosity=0)
    assert ProductTerms.objects.count() == 24
    assert VocabularyWord.objects.filter(kind="category").exists()
