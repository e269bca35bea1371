"""Search by photo, similar products, image-text match and the admin's image/title flag."""

import numpy as np
import pytest
from django.urls import reverse

from catalog.images import decode_image
from catalog.models import Product
from embeddings.models import CaptionEmbedding, ImageEmbedding
from embeddings.spaces import space_active
from search.filters import SearchFilters
from search.ranking import product_image_title_agree
from search.selectors import (
    image_text_match,
    image_vector,
    product_search_by_image,
    products_similar,
    text_vector,
)
from tests.builders import COLOURS, brute_force_ranking, jpeg_bytes

pytestmark = pytest.mark.django_db

TITLES = [
    "red cotton t-shirt",
    "blue denim jeans",
    "green wool scarf",
    "yellow rain coat",
    "black leather boots",
    "white linen shirt",
    "purple silk dress",
    "orange canvas bag",
]


@pytest.fixture
def catalog(make_product, embed_on_commit):
    with embed_on_commit():
        return [
            make_product(
                title=title,
                brand="Acme" if i % 2 else "Other",
                images=[jpeg_bytes(COLOURS[i], seed=i)]
                + ([jpeg_bytes(COLOURS[(i + 3) % 8], seed=50 + i)] if i % 3 == 0 else []),
            )
            for i, title in enumerate(TITLES)
        ]


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def halfvec(vector):
    return np.asarray(vector, np.float32).astype(np.float16).astype(np.float64)


def test_search_by_photo_finds_the_product_with_that_photo_first(catalog):
    photo = decode_image(jpeg_bytes(COLOURS[4], seed=4))  # the boots' own photo
    page = product_search_by_image(image=photo, limit=8)
    assert page.results[0].product == catalog[4]
    assert page.results[0].similarity > 0.999
    assert page.results[0].matched == ("image",)
    space = space_active()
    expected = brute_force_ranking(space, image_vector(space, photo))
    assert [hit.product.pk for hit in page.results] == [pid for pid, _ in expected]
    assert page.count == len(catalog)


def test_search_by_photo_applies_filters_and_pages(catalog):
    photo = decode_image(jpeg_bytes(COLOURS[4], seed=4))
    page = product_search_by_image(image=photo, filters=SearchFilters(brand="Acme"), limit=8)
    assert {hit.product.brand for hit in page.results} == {"Acme"}
    assert page.count == 4
    assert catalog[4] not in [hit.product for hit in page.results]  # the boots are "Other"
    whole = [h.product.pk for h in product_search_by_image(image=photo, limit=8).results]
    paged = [
        h.product.pk
        for offset in (0, 3, 6)
        for h in product_search_by_image(image=photo, limit=3, offset=offset).results
    ]
    assert paged == whole


def test_similar_products_come_from_stored_vectors_best_photo_first(catalog):
    product = catalog[0]  # two photos
    page = products_similar(product=product, limit=5)
    assert product not in [hit.product for hit in page.results]
    assert len(page.results) == 5
    # Brute force: for every other product, its best image against any of ours.
    space = space_active()
    ours = list(
        ImageEmbedding.objects.filter(space=space, image__product=product).values_list(
            "vector", flat=True
        )
    )
    best = {}
    for pid, vector in (
        ImageEmbedding.objects.filter(space=space)
        .exclude(image__product=product)
        .values_list("image__product_id", "vector")
    ):
        score = max(cosine(vector, own) for own in ours)
        best[pid] = max(score, best.get(pid, -2))
    expected = sorted(best, key=lambda pid: (-best[pid], pid))[:5]
    assert [hit.product.pk for hit in page.results] == expected
    np.testing.assert_allclose(
        [hit.similarity for hit in page.results], [best[p] for p in expected], atol=1e-3
    )


def test_similar_products_of_a_product_without_photos_is_empty(make_product, catalog):
    assert products_similar(product=make_product(title="no photo"), limit=5).results == []


def test_image_text_match_scores_and_ranks_among_the_catalog_captions(catalog):
    space = space_active()
    photo = decode_image(jpeg_bytes(COLOURS[2], seed=2))
    text = "a warm green scarf"
    match = image_text_match(image=photo, text=text)
    image, query = halfvec(image_vector(space, photo)), halfvec(text_vector(space, text))
    assert match.score == pytest.approx(cosine(image, query), abs=1e-3)
    captions = [
        cosine(vector, image)
        for vector in CaptionEmbedding.objects.filter(space=space).values_list("vector", flat=True)
    ]
    assert match.compared == len(captions)  # a small catalog: every caption was compared
    assert match.rank == 1 + sum(score > match.score + 1e-6 for score in captions)
    np.testing.assert_allclose(
        [c.score for c in match.top_captions], sorted(captions, reverse=True)[:5], atol=1e-6
    )


def caption_scores(space, image):
    return {
        (pid, fld, text): cosine(vector, image)
        for pid, fld, text, vector in CaptionEmbedding.objects.filter(space=space).values_list(
            "product_id", "field", "text", "vector"
        )
    }


def test_a_catalog_title_ranks_where_its_own_caption_ranks(catalog):
    """Its stored caption ties with it (both halfvec) instead of beating it by rounding."""
    space = space_active()
    photo = decode_image(jpeg_bytes(COLOURS[5], seed=5))
    scores = caption_scores(space, halfvec(image_vector(space, photo)))
    own = scores[(catalog[5].pk, "title", TITLES[5])]
    match = image_text_match(image=photo, text=TITLES[5])
    assert match.score == pytest.approx(own, abs=1e-3)
    assert match.rank == 1 + sum(score > own + 1e-6 for score in scores.values())


def test_image_text_match_beyond_the_compared_captions_has_no_rank(catalog, settings):
    settings.MATCH_TOP_CAPTIONS = 2
    space = space_active()
    photo = decode_image(jpeg_bytes(COLOURS[2], seed=2))
    scores = caption_scores(space, halfvec(image_vector(space, photo)))
    worst = min(scores, key=scores.get)[2]  # seven captions fit better than this one
    match = image_text_match(image=photo, text=worst)
    assert match.compared == 2
    assert match.rank is None
    assert len(match.top_captions) == 2


def test_admin_flags_products_whose_title_is_not_among_their_photos_captions(
    catalog, settings, admin_client
):
    settings.IMAGE_TITLE_TOP_CAPTIONS = 3
    space = space_active()
    captions = list(
        CaptionEmbedding.objects.filter(space=space).values_list("product_id", "field", "vector")
    )
    expected = {}
    for product in catalog:
        main = ImageEmbedding.objects.filter(space=space, image__product=product).order_by(
            "image__position", "image_id"
        )[0]
        top = sorted(captions, key=lambda c: -cosine(c[2], main.vector))[:3]
        expected[product.pk] = any(pid == product.pk and fld == "title" for pid, fld, _ in top)
    agree = dict(
        Product.objects.filter(pk__in=expected)
        .annotate(agree=product_image_title_agree(space))
        .values_list("pk", "agree")
    )
    assert agree == expected
    assert set(agree.values()) == {True, False}  # the tiny random model gets some wrong

    page = admin_client.get(reverse("admin:catalog_product_changelist")).content.decode()
    assert page.count("image and title disagree") == list(expected.values()).count(False)
    disagreeing = next(pid for pid, ok in expected.items() if not ok)
    page = admin_client.get(reverse("admin:catalog_product_change", args=[disagreeing]))
    assert "image and title disagree" in page.content.decode()


def test_admin_does_not_flag_products_not_embedded_yet(make_product, admin_client):
    product = make_product(title="waiting for its vectors", images=[jpeg_bytes(seed=3)])
    agree = (
        Product.objects.filter(pk=product.pk)
        .annotate(agree=product_image_title_agree(space_active()))
        .get()
        .agree
    )
    assert agree is None
    page = admin_client.get(reverse("admin:catalog_product_changelist")).content.decode()
    assert "image and title disagree" not in page


def test_operators_set_a_spaces_similarity_floor_in_the_admin(admin_client, db):
    space = space_active()
    url = reverse("admin:embeddings_embeddingspace_change", args=[space.pk])
    response = admin_client.post(url, {"similarity_floor": "0.27"})
    assert response.status_code == 302, response.content.decode()[:2000]
    space.refresh_from_db()
    assert space.similarity_floor == 0.27
