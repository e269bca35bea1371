"""Vector search ranks exactly like brute force, uses the space's HNSW index, stays in its space.

Image-only hits are kept here (similarity floor -1): these tests are about the vector list.
"""

import numpy as np
import pytest
from django.db import connection

from catalog.models import Product, ProductImage
from embeddings.encoder import ModelSpec
from embeddings.models import ImageEmbedding
from embeddings.spaces import space_active, space_create
from search.filters import SearchFilters
from search.pipeline import product_search_by_text
from search.query import QueryTerm
from search.retrieval import TextMatch, hybrid_search_params, hybrid_search_sql
from search.selectors import captions_by_image, products_nearest, text_vector
from tests.builders import COLOURS, brute_force_ranking, jpeg_bytes

pytestmark = pytest.mark.django_db

# The words "shirt" must match (search.matching decides this for a real query).
SHIRT = TextMatch(terms=(QueryTerm("shirt", (0,), ("shirt",)),), required=(0,), counted=(0,))


@pytest.fixture(autouse=True)
def no_similarity_floor(settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0


@pytest.fixture
def catalog(make_product, embed_on_commit):
    """24 products with one or two images each, embedded in the active space."""
    with embed_on_commit():
        for i in range(24):
            photos = [
                jpeg_bytes(COLOURS[i % 8], stripes=COLOURS[(i * 3) % 8] if i % 3 else None, seed=i)
            ]
            if i % 2:
                photos.append(jpeg_bytes(COLOURS[(i + 1) % 8], seed=100 + i))
            make_product(title=f"Product {i}", images=photos)
    return space_active()


@pytest.mark.parametrize("query", ["red striped t-shirt", "黑色皮鞋", "blue"])
def test_text_search_equals_brute_force_numpy_ranking(catalog, query):
    page = product_search_by_text(query=query, limit=24)
    expected = brute_force_ranking(catalog, text_vector(catalog, query))
    # The nearest photos are the matches, the rest of the window is related: one order.
    assert 1 <= page.count == len([hit for hit in page.results if not hit.related])
    assert [hit.product.pk for hit in page.results] == [pid for pid, _ in expected]
    np.testing.assert_allclose(
        [hit.similarity for hit in page.results], [score for _, score in expected], atol=1e-4
    )
    # No title matches these queries, so the fused order is the vector order.
    assert all(hit.matched == ("image",) for hit in page.results)
    scores = [hit.score for hit in page.results if not hit.related]
    assert scores == sorted(scores, reverse=True)


def test_pages_do_not_overlap_or_skip(catalog, settings):
    settings.SEARCH_VECTOR_GAP = 1.0  # the upper half of the window: 12 matches
    page = product_search_by_text(query="red", limit=24)
    whole = [hit.product.pk for hit in page.results if not hit.related]
    assert len(whole) == page.count >= 10
    pages = [product_search_by_text(query="red", limit=5, offset=o).results for o in (0, 5, 10)]
    shown = [hit.product.pk for page in pages for hit in page if not hit.related]
    assert shown == whole[:15]


def test_search_stays_in_its_space(catalog):
    """Vectors of another space (closer to the query!) never leak into the active results."""
    other = space_create(name="other", spec=ModelSpec("shop-tiny", seed=7))
    query_vector = text_vector(catalog, "red")
    images = list(ProductImage.objects.all())
    ImageEmbedding.objects.bulk_create(
        ImageEmbedding(image=image, space=other, vector=query_vector, source_sha256=image.sha256)
        for image in images
    )
    page = product_search_by_text(query="red", limit=24)
    assert [hit.product.pk for hit in page.results] == [
        pid for pid, _ in brute_force_ranking(catalog, query_vector)
    ]
    assert max(hit.similarity for hit in page.results) < 0.999
    # ...and the other space answers from its own vectors only (all identical to the query).
    other_page = products_nearest(space=other, vector=query_vector, limit=24)
    assert other_page.count == 24
    assert min(hit.similarity for hit in other_page.results) > 0.999


def test_search_query_uses_the_spaces_hnsw_index(db, settings):
    """When the result window is a small part of the space, the planner picks its HNSW index."""
    settings.SEARCH_MAX_RESULTS = 20
    space = space_active()
    other = space_create(name="other-for-plan", spec=ModelSpec("shop-tiny", seed=8))
    product = Product.objects.create(sku="PLAN-1", title="plan", price="1.00")
    images = ProductImage.objects.bulk_create(
        ProductImage(product=product, file=f"products/x{i}.jpg", sha256=f"{i:064x}")
        for i in range(3000)
    )
    rng = np.random.default_rng(0)
    for target in (space, other):
        vectors = rng.standard_normal((len(images), space.embed_dim)).astype(np.float32)
        ImageEmbedding.objects.bulk_create(
            ImageEmbedding(image=image, space=target, vector=vector, source_sha256=image.sha256)
            for image, vector in zip(images, vectors, strict=True)
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE embeddings_imageembedding")
        params = hybrid_search_params(
            space=space, vector=vectors[0], filters=SearchFilters(), match=SHIRT
        )
        cursor.execute("EXPLAIN " + hybrid_search_sql(space, SearchFilters(), match=SHIRT), params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert f"Index Scan using emb_image_hnsw_s{space.pk} " in plan, plan
    assert f"emb_image_hnsw_s{other.pk}" not in plan


def test_text_condition_can_use_the_gin_index(db):
    """The text half matches through the GIN index on the generated search document."""
    space = space_active()
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # a tiny table would be scanned anyway
        params = hybrid_search_params(
            space=space,
            vector=np.ones(space.embed_dim, np.float32),
            filters=SearchFilters(),
            match=SHIRT,
        )
        cursor.execute("EXPLAIN " + hybrid_search_sql(space, SearchFilters(), match=SHIRT), params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    assert "catalog_product_search_gin" in plan, plan


def test_image_to_caption_ranks_catalog_captions(make_product, embed_on_commit):
    with embed_on_commit():
        for i, title in enumerate(["red dress", "blue jeans", "green scarf", "black boots"]):
            make_product(title=title, description=f"Item {i}", images=[jpeg_bytes(seed=i)])
    from catalog.images import decode_image
    from embeddings.models import CaptionEmbedding
    from embeddings.spaces import space_encoder

    image = decode_image(jpeg_bytes((220, 20, 20), seed=50))
    space, hits = captions_by_image(image=image, limit=5)
    vector = space_encoder(space).encode_images([image])[0].astype(np.float16).astype(np.float64)
    expected = sorted(
        (
            (
                float(
                    np.asarray(v, np.float64) @ vector / np.linalg.norm(v) / np.linalg.norm(vector)
                ),
                text,
            )
            for text, v in CaptionEmbedding.objects.values_list("text", "vector")
        ),
        reverse=True,
    )[:5]
    assert [hit.text for hit in hits] == [text for _, text in expected]
    np.testing.assert_allclose([hit.score for hit in hits], [s for s, _ in expected], atol=1e-4)
