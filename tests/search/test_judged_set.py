"""The judged query set: its reader, its scores on a hand-checked shop, and the demo's floor."""

import json
import math
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Product, ProductImage, ProductVariant
from catalog.services import demo_catalog_load, products_variants_summarise
from embeddings.models import ImageEmbedding
from embeddings.spaces import space_active
from search.judged import (
    JudgedSetError,
    judged_query_score,
    judged_set_evaluate,
    judged_set_parse,
    judged_set_read,
    rule_q,
)
from search.pipeline import product_search_by_text

pytestmark = pytest.mark.django_db

DEMO_JUDGMENTS = Path(__file__).parents[2] / "search" / "data" / "judged" / "demo.tsv"
# The demo set's overall nDCG@10 on the 384-product demo, searched with the tests' default space
# (shop-tiny untrained: the words decide), measured 0.462 before the relevance work (word
# forms, understanding, graceful matching, the cut-off) and 0.887 after it; the floor sits a
# little under it. Raise it when relevance improves.
DEMO_NDCG_FLOOR = 0.85


def skus(condition):
    return set(Product.objects.filter(condition).values_list("sku", flat=True))


def dcg(grades):
    return sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(grades))


# --- reading ------------------------------------------------------------------------------


def test_rules_select_products_by_their_own_data(catalog_shop, make_product):
    make_product(sku="ATT-1", title="Mug", attributes={"colour": "Red", "pattern": "striped"})
    make_product(sku="ATT-2", title="Mug", attributes={"colour": "blue", "pattern": "checked"})
    make_product(sku="ATT-3", title="Mug", attributes={"colour": "red", "contains": "x"})
    assert skus(rule_q("category=clothing")) == {"TEE-100", "TEE-101", "DRS-200", "DRS-201"}
    assert skus(rule_q("category=clothing-dresses in_stock=true")) == {"DRS-201"}
    assert skus(rule_q("category=shoes|clothing-t-shirts price<100")) == {
        "TEE-100",
        "TEE-101",
        "SHO-300",
    }
    assert skus(rule_q("price>=39 price<=89")) == {"DRS-200", "DRS-201", "SHO-300"}
    assert skus(rule_q("price>59 in_stock=TRUE")) == {"SHO-300", "SHO-301"}
    assert skus(rule_q("brand=acme|STEPWELL in_stock=false")) == {"DRS-200"}
    assert skus(rule_q("sku=TEE-101|SHO-301")) == {"TEE-101", "SHO-301"}
    assert skus(rule_q("attr.colour=red")) == {"ATT-1", "ATT-3"}
    assert skus(rule_q("attr.colour=RED attr.pattern=striped|checked")) == {"ATT-1"}
    assert skus(rule_q("attr.contains=X")) == {"ATT-3"}  # a key named like a lookup
    make_product(sku="ATT-4", title="Bag", brand="Blue Harbor")
    assert skus(rule_q('brand="blue harbor"|Acme category=clothing-t-shirts')) == {"TEE-100"}
    assert skus(rule_q('brand="Blue Harbor"')) == {"ATT-4"}


def test_an_attribute_rule_holds_for_each_colour_a_product_is_sold_in(make_product):
    make_product(sku="MC-1", title="Dress", attributes={"colour": ["red", "navy"]})
    dress = make_product(sku="MC-2", title="Dress", attributes={"colour": "green"})
    ProductVariant.objects.create(product=dress, sku="MC-2-R", options={"Colour": "Red"}, price=9)
    products_variants_summarise([dress.pk])
    assert skus(rule_q("attr.colour=red")) == {"MC-1", "MC-2"}
    assert skus(rule_q("attr.colour=NAVY|green")) == {"MC-1", "MC-2"}
    assert skus(rule_q("attr.colour=re")) == set()


def test_a_file_reads_into_queries_with_their_groups(catalog_shop, tmp_path):
    path = tmp_path / "judged.tsv"
    path.write_text(
        "# a judged set\n"
        "red tee\tcategory=clothing-t-shirts\t1\n"
        "\n"
        "red tee\tsku=TEE-100\t3\r\n"
        "  # an indented comment\n"
        "red tee\tcategory=shoes\t0\n"
        "# group: colours\n"
        "红色连衣裙\tcategory=clothing-dresses attr.colour=red\t3\n"
        "#group:nonsense \n"
        "asdfgh\tnone\t0\n",
        encoding="utf-8",
    )
    queries = judged_set_read(path)
    assert [(q.query, q.group, q.expects_nothing) for q in queries] == [
        ("red tee", "", False),
        ("红色连衣裙", "colours", False),
        ("asdfgh", "nonsense", True),
    ]
    tee = queries[0]
    assert [(j.line, j.rule, j.grade) for j in tee.judgments] == [
        (2, "category=clothing-t-shirts", 1),
        (4, "sku=TEE-100", 3),
        (6, "category=shoes", 0),
    ]
    assert skus(tee.judgments[1].condition) == {"TEE-100"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("red tee\tsku=TEE-100", "line 3: expected query<TAB>rule<TAB>grade, found 2 field(s)"),
        ("red tee\tsku=TEE-100\t3\textra", "found 4 field(s)"),
        ("\tsku=TEE-100\t3", "line 3: the query is empty"),
        ("red tee\t \t3", "line 3: the rule is empty"),
        ("red tee\tsku=TEE-100\t4", "line 3: the grade is 0 to 3, not '4'"),
        ("red tee\tsku=TEE-100\tthree", "the grade is 0 to 3, not 'three'"),
        ("red tee\tsku=TEE-100\t-1", "the grade is 0 to 3, not '-1'"),
        ("red tee\tcolour=red\t3", "line 3: unknown field 'colour' (fields: sku, brand,"),
        ("red tee\tattr=red\t3", "unknown field 'attr'"),
        ("red tee\ttitle~red\t3", "'title~red' is not field=value or price<=N"),
        ("red tee\tprice<=cheap\t3", "line 3: price needs a number, not 'cheap'"),
        ("red tee\tprice<=NaN\t3", "price needs a number, not 'NaN'"),
        ("red tee\tprice=40\t3", "price takes <=, >=, < or >, not '='"),
        ("red tee\tbrand>Acme\t3", "brand takes =, not '>'"),
        ("red tee\tin_stock=yes\t3", "in_stock is true or false, not 'yes'"),
        ("red tee\tsku=\t3", "sku needs a value (several are separated by |)"),
        ("red tee\tattr.colour=red|\t3", "attr.colour needs a value"),
        ("red tee\tcategory=nowhere\t3", "line 3: unknown category slug 'nowhere'"),
        ('red tee\tbrand="Acme\t3', "No closing quotation"),
        ("red tee\tnone\t2", "line 3: the rule 'none' goes with grade 0"),
    ],
)
def test_a_bad_line_is_an_error_that_says_where_and_why(catalog_shop, line, message):
    with pytest.raises(JudgedSetError) as error:
        judged_set_parse(["# judged", "", line])
    assert message in str(error.value)
    assert str(error.value).startswith("line 3: ")


def test_a_query_is_judged_none_or_by_rules_and_in_one_group(catalog_shop):
    with pytest.raises(JudgedSetError, match=r"line 2: query 'x' is judged both 'none' \(line 1\)"):
        judged_set_parse(["x\tnone\t0", "x\tsku=TEE-100\t3"])
    with pytest.raises(JudgedSetError, match="line 4: query 'x' is in group 'a' already"):
        judged_set_parse(["# group: a", "x\tsku=TEE-100\t3", "# group: b", "x\tsku=TEE-101\t1"])
    with pytest.raises(JudgedSetError, match="missing.tsv"):
        judged_set_read("missing.tsv")


# --- scoring ------------------------------------------------------------------------------

HAND_JUDGED = """\
# group: words
black shoes\tsku=SHO-300\t3
black shoes\tcategory=shoes\t1
dress\tcategory=clothing-dresses in_stock=true\t3
dress\tcategory=clothing-dresses\t2
# group: misses
qwertyuiop\tcategory=clothing-t-shirts\t3
sandals\tsku=NOT-SOLD-HERE\t3
# group: nonsense
asdfgh\tnone\t0
striped\tnone\t0
"""


@pytest.fixture
def words_decide(settings):
    """No photo is similar enough to count: the words alone decide what matches, so the
    scores can be worked out by hand (the other products fill thin pages as related ones)."""
    settings.SEARCH_SIMILARITY_FLOOR = 0.999


def test_scores_are_worked_out_by_hand(catalog_shop, words_decide):
    evaluation = judged_set_evaluate(judged_set_parse(HAND_JUDGED.splitlines()))
    scores = {s.query: s for s in evaluation.scores}

    # "black shoes" matches SHO-300 alone (3); the brown boots (1) come only as a related
    # product, which is no match: the ideal is [3, 1].
    page = product_search_by_text(query="black shoes", limit=10)
    assert [h.product.sku for h in page.results if not h.related] == ["SHO-300"]
    assert "SHO-301" in [h.product.sku for h in page.results if h.related]
    shoes = scores["black shoes"]
    assert (shoes.count, shoes.grades, shoes.relevant) == (1, (3,), 2)
    assert shoes.ndcg == pytest.approx(7 / (7 + 1 / math.log2(3)))
    assert shoes.precision == 0.5  # 1 relevant shown, over the 2 the catalog has
    assert not shoes.zero_result

    # "dress" matches both dresses: the one in stock (3) and the one sold out (2).
    dress = scores["dress"]
    assert dress.count == 2
    assert sorted(dress.grades) == [2, 3]
    in_stock_first = 1.0
    sold_out_first = (3 + 7 / math.log2(3)) / (7 + 3 / math.log2(3))
    assert dress.ndcg == pytest.approx(in_stock_first if dress.grades == (3, 2) else sold_out_first)
    assert dress.precision == 1.0

    missed = scores["qwertyuiop"]  # the t-shirts are there, the search finds nothing
    assert (missed.count, missed.ndcg, missed.precision, missed.zero_result) == (0, 0, 0, True)
    assert not scores["sandals"].judged  # nothing in this catalog is relevant: left out
    assert scores["asdfgh"].count == 0
    assert scores["striped"].count == 2  # expected nothing, found the striped tee and dress

    overall = evaluation.overall
    assert overall.queries == 3
    assert overall.ndcg == pytest.approx((shoes.ndcg + dress.ndcg + 0) / 3)
    assert overall.precision == pytest.approx((0.5 + 1 + 0) / 3)
    assert overall.zero_result_rate == pytest.approx(1 / 3)
    assert (overall.nothing_queries, overall.nothing_found) == (2, 0.5)
    assert overall.unjudged == ("sandals",)
    assert list(evaluation.groups) == ["words", "misses", "nonsense"]
    assert evaluation.groups["words"].ndcg == pytest.approx((shoes.ndcg + dress.ndcg) / 2)
    assert evaluation.groups["misses"].zero_result_rate == 1.0
    assert evaluation.groups["misses"].unjudged == ("sandals",)
    nonsense = evaluation.groups["nonsense"]
    assert (nonsense.queries, nonsense.ndcg, nonsense.nothing_found) == (0, None, 0.5)


def test_a_query_judged_at_low_grades_only(catalog_shop, words_decide):
    plain, blue = judged_set_parse(["plain\tsku=TEE-101\t1", "blue\tcategory=clothing\t0"])
    score = judged_query_score(plain)  # the one grade-1 product, shown: the ideal
    assert (score.grades, score.relevant, score.ndcg, score.precision) == ((1,), 1, 1.0, 1.0)
    score = judged_query_score(blue)  # grade 0 only: nothing relevant, left out of the means
    assert (score.count, score.grades, score.relevant, score.ndcg) == (1, (0,), 0, None)
    assert not score.judged


def test_the_command_prints_the_scores_and_holds_the_floor(
    catalog_shop, words_decide, tmp_path, capsys
):
    path = tmp_path / "judged.tsv"
    path.write_text(HAND_JUDGED, encoding="utf-8")
    call_command("evaluate_search", judgments=str(path), queries=True)
    out = capsys.readouterr().out
    for text in ("nDCG@10", "P@10", "zero-result", "black shoes", "found nothing (expected)"):
        assert text in out
    assert "no relevant product in the catalog (left out): 'sandals'" in out

    call_command("evaluate_search", judgments=str(path), json=True, queries=True)
    result = json.loads(capsys.readouterr().out)
    assert result["overall"]["queries"] == 3
    assert set(result["groups"]) == {"words", "misses", "nonsense"}
    by_query = {row["query"]: row for row in result["per_query"]}
    assert by_query["black shoes"]["ndcg"] == pytest.approx(7 / (7 + 1 / math.log2(3)))
    assert by_query["qwertyuiop"]["zero_result"] is True

    ndcg = result["overall"]["ndcg"]
    call_command("evaluate_search", judgments=str(path), min_ndcg=round(ndcg - 0.01, 3))
    with pytest.raises(CommandError, match=f"nDCG@10 {ndcg:.3f} is below the floor"):
        call_command("evaluate_search", judgments=str(path), min_ndcg=round(ndcg + 0.01, 3))


def test_the_command_reports_a_bad_file_and_bad_options(catalog_shop, tmp_path):
    path = tmp_path / "judged.tsv"
    path.write_text("red tee\tcolour=red\t3\n", encoding="utf-8")
    with pytest.raises(CommandError, match="line 1: unknown field 'colour'"):
        call_command("evaluate_search", judgments=str(path))
    with pytest.raises(CommandError, match="--min-ndcg goes with --judgments"):
        call_command("evaluate_search", min_ndcg=0.5)
    with pytest.raises(CommandError, match="--space does not go with --judgments"):
        call_command("evaluate_search", judgments=str(path), space="other")
    with pytest.raises(CommandError, match="--min-ndcg is between 0 and 1"):
        call_command("evaluate_search", judgments=str(path), min_ndcg=2)


# --- the demo catalog's judged set ---------------------------------------------------------


def test_the_demo_judged_set_holds_its_floor(django_capture_on_commit_callbacks, capsys):
    with django_capture_on_commit_callbacks(execute=True):
        demo_catalog_load(count=384, embed=True)
    assert ImageEmbedding.objects.filter(space=space_active(), vector__isnull=False).count() == (
        ProductImage.objects.count()
    )
    call_command(
        "evaluate_search", judgments=str(DEMO_JUDGMENTS), min_ndcg=DEMO_NDCG_FLOOR, json=True
    )
    overall = json.loads(capsys.readouterr().out)["overall"]
    print(f"judged set nDCG@10 {overall['ndcg']:.3f}, P@10 {overall['precision']:.3f}")
    assert overall["queries"] + overall["nothing_queries"] >= 100
    assert overall["unjudged"] == []  # every query has a relevant product in this catalog
