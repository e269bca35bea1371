"""Merchandising rules: pins and hides on every page, boosts and buries, when rules apply,
deleted products, a product hidden from every search hidden from similar products and its
own page, bad rules refused, the admin and its preview."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from catalog.models import Category, Product
from catalog.selectors import category_subtree_ids
from catalog.services import category_get_or_create_path
from search.filters import SearchFilters
from search.models import MerchandisingRule, RuleBoost, RuleProduct
from search.pipeline import product_search_by_text
from search.rules import merchandising_rule_create, rule_problems

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def words_only(settings):
    """Only word matches are relevant: the random tiny model's similarities are near 0."""
    settings.SEARCH_SIMILARITY_FLOOR = 0.99


def relevant(page):
    return [hit.product.sku for hit in page.results if not hit.related]


def all_pages(query, limit, **kwargs):
    pages, offset = [], 0
    while True:
        page = product_search_by_text(query=query, limit=limit, offset=offset, **kwargs)
        if not relevant(page):
            return pages
        pages.append(page)
        offset += limit


@pytest.fixture
def lamps(make_product):
    """23 lamps (two brands, one out of stock in three), and a gift card without "lamp"."""
    lighting = category_get_or_create_path(["Home", "Lighting"])
    products = [
        make_product(
            sku=f"LMP-{i:03d}",
            title=f"Table lamp model {i}",
            brand="Glow" if i % 2 else "Lumen",
            in_stock=i % 3 != 0,
            price=f"{20 + i}.00",
            category=lighting,
        )
        for i in range(23)
    ]
    gift = make_product(sku="GFT-1", title="Gift card", price="50.00")
    return products, gift


def test_a_pinned_product_is_first_and_a_hidden_one_absent_on_every_page(lamps):
    products, gift = lamps
    pinned, hidden = products[17], products[4]
    merchandising_rule_create(
        name="Lamp campaign", query="lamp", pins=[(pinned, 1), (gift, 3)], hides=[hidden]
    )
    pages = all_pages("table lamp", limit=5)
    order = [sku for page in pages for sku in relevant(page)]
    assert order[0] == pinned.sku
    assert order[2] == gift.sku  # pinned even though its words do not match
    assert hidden.sku not in order
    assert len(order) == len(set(order)) == 23  # 22 lamps and the gift card, each once
    assert all(page.count == 23 for page in pages)
    first = pages[0].results
    assert "pinned" in first[0].matched
    assert "text" in first[0].matched
    assert first[2].matched == ("pinned",)
    assert not any("pinned" in hit.matched for page in pages for hit in page.results[3:])
    # Facets count the page's products as the rules left them.
    assert pages[0].facets.brands == pages[-1].facets.brands
    assert sum(f.count for f in pages[0].facets.brands) == 22  # the gift card has no brand


def test_pins_respect_the_shoppers_filters(lamps):
    products, _ = lamps
    out_of_stock = products[3]
    merchandising_rule_create(name="Pin", query="lamp", pins=[(out_of_stock, 1)])
    assert relevant(product_search_by_text(query="lamp", limit=5))[0] == out_of_stock.sku
    page = product_search_by_text(query="lamp", limit=30, filters=SearchFilters(in_stock=True))
    assert out_of_stock.sku not in relevant(page)


def test_boost_and_bury_reorder_the_whole_window(lamps):
    products, _ = lamps
    merchandising_rule_create(
        name="Glow first, out of stock last",
        query="lamp",
        boosts=[
            {"action": "boost", "kind": "brand", "brand": "Glow", "factor": Decimal("3")},
            {"action": "bury", "kind": "out_of_stock", "factor": Decimal("10")},
        ],
    )
    order = [sku for page in all_pages("lamp", limit=4) for sku in relevant(page)]
    by_sku = {p.sku: p for p in products}
    kinds = [(by_sku[s].brand, by_sku[s].in_stock) for s in order]
    groups = [("Glow", True), ("Lumen", True), ("Glow", False), ("Lumen", False)]
    assert kinds == sorted(kinds, key=groups.index)
    assert len(order) == 23


def test_a_category_boost_counts_sub_categories(make_product):
    home = Category.objects.get(pk=category_get_or_create_path(["Home"]).pk)
    lighting = category_get_or_create_path(["Home", "Lighting"])
    shoes = category_get_or_create_path(["Shoes"])
    in_shoes = [make_product(title=f"Gift idea {i}", category=shoes) for i in range(3)]
    in_lighting = make_product(title="Gift idea lamp", category=lighting)
    merchandising_rule_create(
        name="Home gifts",
        query="gift",
        boosts=[{"action": "boost", "kind": "category", "category": home, "factor": 5}],
    )
    order = relevant(product_search_by_text(query="gift idea", limit=10))
    assert order[0] == in_lighting.sku
    assert set(order[1:]) == {p.sku for p in in_shoes}


@pytest.mark.parametrize(
    ("match", "query", "applies"),
    [
        ("contains", "red table lamp", True),
        ("contains", "TABLE-lamp", False),  # a hyphenated word is one word
        ("contains", "lamp", False),  # both words are needed
        ("exact", "Table  Lamp", True),
        ("exact", "red table lamp", False),
    ],
)
def test_exact_and_contains_queries(lamps, match, query, applies):
    _, gift = lamps
    merchandising_rule_create(name="r", query="table lamp", match=match, pins=[(gift, 1)])
    page = product_search_by_text(query=query, limit=3)
    assert (page.results[0].product == gift) is applies if page.results else not applies


def test_category_rules_apply_to_searches_in_that_category_or_below(lamps, make_product):
    _, gift = lamps
    home = Category.objects.get(slug="home")
    merchandising_rule_create(name="Home", category=home, pins=[(gift, 1)])
    lighting = Category.objects.get(slug="home-lighting")
    for category in (home, lighting, None):
        filters = SearchFilters(
            category_ids=tuple(category_subtree_ids(category=category)) if category else ()
        )
        page = product_search_by_text(query="lamp", filters=filters, limit=3)
        # The gift card has no category: a category filter drops it like any product.
        assert all(hit.product != gift for hit in page.results)
        assert ("pinned" in page.results[0].matched) is False
    # A rule for Lighting applies to searches in Lighting, not in all of Home.
    lamp = Product.objects.get(sku="LMP-020")
    merchandising_rule_create(name="Lighting", category=lighting, pins=[(lamp, 1)])
    for category, applies in ((lighting, True), (home, False)):
        filters = SearchFilters(category_ids=tuple(category_subtree_ids(category=category)))
        first = relevant(product_search_by_text(query="lamp", filters=filters, limit=3))[0]
        assert (first == "LMP-020") is applies


def test_photo_searches_get_the_rules_without_a_query(catalog_shop):
    from embeddings.spaces import space_active
    from search.selectors import products_nearest, text_vector

    space = space_active()
    vector = text_vector(space, "anything")
    merchandising_rule_create(name="Everywhere", hides=[catalog_shop["SHO-300"]])
    merchandising_rule_create(name="Query", query="boots", hides=[catalog_shop["SHO-301"]])
    page = products_nearest(space=space, vector=vector, limit=10)
    assert {hit.product.sku for hit in page.results} == set(catalog_shop) - {"SHO-300"}
    assert page.count == 5


# --- hidden from every search: hidden everywhere a shopper looks ---------------------------


def similar_skus(client, product, limit=8):
    response = client.get(reverse("api-product-similar", args=[product.pk]), {"limit": limit})
    assert response.status_code == 200
    return [result["sku"] for result in response.json()["results"]]


def test_a_product_hidden_from_every_search_is_not_among_similar_products(client, catalog_shop):
    dress = catalog_shop["DRS-201"]
    nearest = similar_skus(client, dress, limit=3)
    merchandising_rule_create(name="Everywhere", hides=[catalog_shop[sku] for sku in nearest[:2]])
    # Rules for a query or a category hide only there: such products still look alike.
    merchandising_rule_create(name="Query", query="boots", hides=[catalog_shop["SHO-301"]])
    shoes = Category.objects.get(slug="shoes")
    merchandising_rule_create(name="Shoes", category=shoes, hides=[catalog_shop["SHO-300"]])

    shown = similar_skus(client, dress, limit=3)
    assert len(shown) == 3  # the hidden are left out before the limit, not after it
    assert not set(shown) & set(nearest[:2])
    assert set(similar_skus(client, dress)) == set(catalog_shop) - {"DRS-201", *nearest[:2]}
    page = client.get(reverse("product-detail", args=[dress.pk])).content.decode()
    row = page[page.index("Similar products") :]
    assert row.count('class="card"') == 3
    assert not any(f'data-sku="{sku}"' in row for sku in nearest[:2])


def test_the_page_of_a_product_hidden_from_every_search_is_a_404_but_to_staff(
    client, admin_client, catalog_shop
):
    hidden, boots = catalog_shop["SHO-300"], catalog_shop["SHO-301"]
    merchandising_rule_create(name="Everywhere", hides=[hidden])
    merchandising_rule_create(name="Query", query="boots", hides=[boots])
    merchandising_rule_create(
        name="Ended", hides=[boots], ends_at=timezone.now() - timedelta(hours=1)
    )
    page, api = (
        reverse("product-detail", args=[hidden.pk]),
        reverse("api-product-similar", args=[hidden.pk]),
    )
    assert client.get(page).status_code == 404
    missing = client.get(reverse("api-product-similar", args=[999999])).json()
    assert client.get(api).status_code == 404
    assert client.get(api).json() == missing  # says no more than for a deleted product
    staff_page = admin_client.get(page)
    assert staff_page.status_code == 200
    assert 'id="hidden-from-shoppers"' in staff_page.content.decode()
    assert admin_client.get(api).status_code == 200
    # Hidden only for a query, or by a rule that has ended: the page stays.
    boots_page = client.get(reverse("product-detail", args=[boots.pk]))
    assert boots_page.status_code == 200
    assert (
        'id="hidden-from-shoppers"'
        not in admin_client.get(reverse("product-detail", args=[boots.pk])).content.decode()
    )


def test_time_windows_and_disabled_rules(lamps):
    _, gift = lamps
    now = timezone.now()
    for name, fields in {
        "future": {"starts_at": now + timedelta(hours=1)},
        "past": {"starts_at": now - timedelta(days=2), "ends_at": now - timedelta(days=1)},
        "off": {"enabled": False},
    }.items():
        merchandising_rule_create(name=name, query="lamp", pins=[(gift, 1)], **fields)
    assert gift.sku not in relevant(product_search_by_text(query="lamp", limit=30))
    merchandising_rule_create(
        name="now", query="lamp", pins=[(gift, 2)], ends_at=now + timedelta(hours=1)
    )
    assert relevant(product_search_by_text(query="lamp", limit=3))[1] == gift.sku


def test_the_more_specific_rule_wins_a_position(lamps):
    products, gift = lamps
    merchandising_rule_create(name="general", query="lamp", pins=[(products[9], 1)])
    merchandising_rule_create(name="exact", query="table lamp", match="exact", pins=[(gift, 1)])
    order = relevant(product_search_by_text(query="table lamp", limit=3))
    assert order[:2] == [gift.sku, products[9].sku]


def test_a_rule_naming_a_deleted_product_is_shown_as_broken(admin_client, client, lamps):
    products, gift = lamps
    rule = merchandising_rule_create(
        name="Broken soon", query="lamp", pins=[(gift, 1), (products[2], 2)], hides=[products[5]]
    )
    gift.delete()
    products[5].delete()
    # Search goes on: the deleted pin is skipped, the other pin holds its position.
    page = product_search_by_text(query="lamp", limit=3)
    assert relevant(page)[1] == products[2].sku
    assert "GFT-1" not in relevant(page)
    assert client.get(reverse("api-search"), {"q": "lamp"}).status_code == 200
    rule.refresh_from_db()
    assert rule_problems(rule) == [
        "pin at position: product GFT-1 was deleted",
        "hide: product LMP-005 was deleted",
    ]
    listing = admin_client.get(reverse("admin:search_merchandisingrule_changelist"))
    assert listing.status_code == 200
    assert "broken: pin at position: product GFT-1 was deleted" in listing.content.decode()
    change = admin_client.get(reverse("admin:search_merchandisingrule_change", args=[rule.pk]))
    assert change.status_code == 200
    html = change.content.decode()
    assert "broken: product GFT-1 was deleted; choose another or delete this row" in html
    assert 'class="rule-preview"' in html  # the preview still renders


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pins": "position 0"}, "Position must be between 1 and 200"),
        ({"pins": "position 201"}, "Position must be between 1 and 200"),
        ({"pins": "twice at 1"}, "Two products are pinned at position 1."),
        ({"pins": "pinned and hidden"}, "A product is both pinned and hidden."),
        ({"ends_at": -1}, "The end must be after the start."),
        ({"query": "!!!"}, "The query has no letters or digits."),
        ({"boost": {"kind": "brand", "brand": ""}}, "Name the brand to boost or bury."),
        ({"boost": {"kind": "category"}}, "Choose the category to boost or bury."),
        ({"boost": {"kind": "in_stock", "factor": Decimal("1")}}, "greater than or equal to 1.01"),
    ],
)
def test_impossible_rules_are_refused(lamps, kwargs, message):
    products, gift = lamps
    fields = {"name": "bad", "query": kwargs.get("query", "lamp")}
    pins = {
        "position 0": [(gift, 0)],
        "position 201": [(gift, 201)],
        "twice at 1": [(gift, 1), (products[0], 1)],
        "pinned and hidden": [(gift, 1)],
    }.get(kwargs.get("pins"), [])
    fields["pins"] = pins
    if kwargs.get("pins") == "pinned and hidden":
        fields["hides"] = [gift]
    if "ends_at" in kwargs:
        fields["starts_at"] = timezone.now()
        fields["ends_at"] = fields["starts_at"] - timedelta(hours=1)
    if "boost" in kwargs:
        fields["boosts"] = [{"action": "boost", **kwargs["boost"]}]
    with pytest.raises(ValidationError, match=message):
        merchandising_rule_create(**fields)
    assert not MerchandisingRule.objects.exists()


def admin_rule_form(**overrides):
    data = {
        "name": "Lamps",
        "enabled": "on",
        "query": "lamp",
        "match": "contains",
        "category": "",
        "starts_at_0": "",
        "starts_at_1": "",
        "ends_at_0": "",
        "ends_at_1": "",
        "products-TOTAL_FORMS": "0",
        "products-INITIAL_FORMS": "0",
        "boosts-TOTAL_FORMS": "0",
        "boosts-INITIAL_FORMS": "0",
    }
    return {**data, **overrides}


def product_rows(*rows):
    data = {"products-TOTAL_FORMS": str(len(rows))}
    for i, (action, product, position) in enumerate(rows):
        data |= {
            f"products-{i}-action": action,
            f"products-{i}-product": str(product.pk),
            f"products-{i}-position": "" if position is None else str(position),
        }
    return data


def test_the_admin_refuses_impossible_rules_with_form_errors(admin_client, lamps):
    products, gift = lamps
    url = reverse("admin:search_merchandisingrule_add")
    cases = [
        (product_rows(("pin", gift, 0)), "Position must be between 1 and 200"),
        (product_rows(("pin", gift, None)), "A pin needs a position (1 = first)."),
        (product_rows(("pin", gift, 1), ("pin", products[1], 1)), "Two products are pinned"),
        (product_rows(("pin", gift, 1), ("hide", gift, None)), "both pinned and hidden"),
        (
            {
                "starts_at_0": "2030-01-02",
                "starts_at_1": "10:00",
                "ends_at_0": "2030-01-01",
                "ends_at_1": "10:00",
            },
            "The end must be after the start.",
        ),
        (
            {"boosts-TOTAL_FORMS": "1", "boosts-0-action": "boost", "boosts-0-kind": "brand",
             "boosts-0-brand": "", "boosts-0-factor": "3"},
            "Name the brand to boost or bury.",
        ),
    ]  # fmt: skip
    for overrides, message in cases:
        response = admin_client.post(url, admin_rule_form(**overrides))
        assert response.status_code == 200, message
        assert message in response.content.decode(), message
    assert not MerchandisingRule.objects.exists()


def test_the_admin_saves_a_rule_and_previews_its_page(admin_client, lamps):
    products, gift = lamps
    url = reverse("admin:search_merchandisingrule_add")
    form = admin_rule_form(
        **product_rows(("pin", gift, 1), ("hide", products[0], None)),
        **{"boosts-TOTAL_FORMS": "1", "boosts-0-action": "bury", "boosts-0-kind": "out_of_stock",
           "boosts-0-brand": "", "boosts-0-factor": "4"},
    )  # fmt: skip
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    rule = MerchandisingRule.objects.get()
    assert rule.query_words == ["lamp"]
    entries = {(e.action, e.product_sku, e.position) for e in rule.products.all()}
    assert entries == {("pin", "GFT-1", 1), ("hide", "LMP-000", None)}
    assert rule.boosts.get().action == RuleBoost.Action.BURY
    assert relevant(product_search_by_text(query="lamp", limit=2))[0] == gift.sku

    page = admin_client.get(reverse("admin:search_merchandisingrule_change", args=[rule.pk]))
    html = page.content.decode()
    assert 'class="badge pinned">pinned</span>' in html
    assert "bury ÷4" in html
    assert "Hidden by this rule: LMP-000" in html
    # Another query typed beside the rule: the rule's words are not in it.
    page = admin_client.get(
        reverse("admin:search_merchandisingrule_change", args=[rule.pk]), {"preview_q": "gift"}
    )
    assert "pinned</span>" not in page.content.decode()
    assert "This rule does not apply to this query" in page.content.decode()
    listing = admin_client.get(reverse("admin:search_merchandisingrule_changelist")).content
    assert "query contains “lamp”" in listing.decode()
    assert "1 pin, 1 hide, bury out of stock ×4.00" in listing.decode()


def test_admin_actions_enable_and_disable_rules(admin_client, lamps):
    _, gift = lamps
    rule = merchandising_rule_create(name="r", query="lamp", pins=[(gift, 1)])
    admin_client.post(
        reverse("admin:search_merchandisingrule_changelist"),
        {"action": "disable", "_selected_action": [rule.pk]},
    )
    rule.refresh_from_db()
    assert not rule.enabled
    assert relevant(product_search_by_text(query="lamp", limit=1)) != [gift.sku]
    assert RuleProduct.objects.count() == 1


def test_a_nonsense_query_shows_only_what_a_rule_pins_there(catalog_shop):
    merchandising_rule_create(name="Everywhere", pins=[(catalog_shop["TEE-101"], 1)])
    page = product_search_by_text(query="asdfgh", limit=10)
    assert [(hit.product.sku, hit.matched, hit.related) for hit in page.results] == [
        ("TEE-101", ("image", "pinned"), False)
    ]
    assert page.suggestions is None
