"""Zero-shot attributes over the catalog's own values, on demo photos the model never saw."""

import io

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from catalog.demo_catalog import demo_product, render_product_image
from catalog.services import category_get_or_create_path
from embeddings.spaces import space_active, space_encoder
from embeddings.zero_shot import (
    attribute_probabilities,
    attribute_value_label,
    attributes_predict,
    zero_shot_attributes,
    zero_shot_cache_clear,
    zero_shot_report,
)
from tests.builders import demo_shop_pinned, jpeg_bytes

pytestmark = pytest.mark.django_db

PRODUCTS = 128
HELD_OUT = range(5000, 5096)  # demo products (and so photos) that are not in the shop


@pytest.fixture(autouse=True)
def fresh_zero_shot():
    zero_shot_cache_clear()
    yield
    zero_shot_cache_clear()


@pytest.fixture
def trained_demo(settings):
    settings.FINETUNE_VAL_FRACTION = 0.25
    demo_shop_pinned(PRODUCTS, ids_after=5_000_000)
    call_command(
        "finetune_clip",
        scratch=True,
        architecture="shop-micro",
        epochs=30,
        batch_size=16,
        lr=3e-3,
        margin=-1.0,
        name="zero-shot",
        no_events=True,
        # 30 epochs of a micro model learn colour or kind, not both: with kind captions its
        # colour fell to 0.10 here (chance 0.08). The answers are tested on titles alone.
        no_kind_captions=True,
    )
    return space_active()


def drawn(index: int) -> dict[str, str]:
    """What a held-out photo shows, as the demo drew it."""
    product = demo_product(index)
    return {
        "colour": product.colour,
        "pattern": product.pattern,
        "material": product.material,
        "category": product.attributes["category"],
        "audience": "women" if product.category[0] == "Women" else "everyone",
    }


def test_photos_the_model_never_saw_get_their_drawn_attributes(trained_demo):
    space = trained_demo
    encoder = space_encoder(space)
    photos = [
        Image.open(io.BytesIO(render_product_image(demo_product(i), 0))).convert("RGB")
        for i in HELD_OUT
    ]
    vectors = encoder.encode_images(photos)
    truth = [drawn(i) for i in HELD_OUT]
    names = zero_shot_attributes()
    assert set(names) == {"colour", "pattern", "material", "category", "audience"}

    guesses = attributes_predict(space=space, image_vectors=vectors)
    report = zero_shot_report(space)
    print(f"\nzero-shot on {len(HELD_OUT)} held-out demo photos ({space.architecture}):")
    print(f"{'attribute':10} {'values':>6} {'chance':>6} {'en':>6} {'zh':>6} {'photos':>6} "
          f"{'fitted':>6} {'blend':>5} {'conf.':>5}")  # fmt: skip
    correct, wrong = [], []
    accuracy = {}
    for name in names:
        hits = [g[name].value == t[name] for g, t in zip(guesses, truth, strict=True)]
        accuracy[name] = float(np.mean(hits))
        sure = np.mean([g[name].confidence for g in guesses])
        for guess, hit in zip(guesses, hits, strict=True):
            (correct if hit else wrong).append(guess[name].confidence)
        if name == "audience":
            print(f"{name:10} {2:>6} {'':>34} {accuracy[name]:6.2f} {'':>5} {sure:5.2f}")
            continue
        values = report[name]["values"]
        by = {}
        for label, kwargs in (
            ("en", {"blend": 0.0, "lang": "en"}),
            ("zh", {"blend": 0.0, "lang": "zh"}),
            ("photos", {"blend": 1.0}),
        ):
            order, p = attribute_probabilities(
                space=space, image_vectors=vectors, name=name, **kwargs
            )
            predicted = [order[i] for i in p.argmax(axis=1)]
            by[label] = np.mean([v == t[name] for v, t in zip(predicted, truth, strict=True)])
        print(
            f"{name:10} {values:>6} {1 / values:6.2f} {by['en']:6.2f} {by['zh']:6.2f} "
            f"{by['photos']:6.2f} {accuracy[name]:6.2f} {report[name]['blend']:5.2f} {sure:5.2f}"
        )

    # What a shopper sees. The colour is named right far more often than a guess. (The
    # demo model reads colour, hardly pattern or kind yet; material is not drawn at all:
    # the table above shows how each one does.)
    assert accuracy["colour"] > 2 / report["colour"]["values"], accuracy
    # The confidence means something: right answers are surer than wrong ones, and what it
    # reads best it is surest of.
    assert np.mean(correct) > np.mean(wrong)
    confidence = {n: np.mean([g[n].confidence for g in guesses]) for n in names}
    best, worst = max(accuracy, key=accuracy.get), min(accuracy, key=accuracy.get)
    assert confidence[best] > confidence[worst], (accuracy, confidence)
    for guess in guesses[0].values():
        probabilities = [guess.confidence] + [p for _, p in guess.alternatives]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6


def test_values_are_said_the_way_the_catalog_says_them(db):
    demo_shop_pinned(24, ids_after=5_100_000)
    assert attribute_value_label("colour", "red", "zh") == "红色"
    assert attribute_value_label("colour", "red", "en") == "red"
    assert attribute_value_label("pattern", "striped", "zh") == "条纹"
    assert attribute_value_label("category", "dress", "zh") == "连衣裙"
    assert attribute_value_label("category", "dress", "en") == "dress"
    assert attribute_value_label("audience", "women", "zh") == "女装"
    assert attribute_value_label("colour", "no such colour", "zh") == "no such colour"


def test_a_catalog_answers_only_what_it_has_two_values_for(make_product):
    shirts = category_get_or_create_path(["Men", "Shirts"])
    mugs = category_get_or_create_path(["Kitchen", "Mugs"])
    make_product(title="Shirt", category=shirts, attributes={"colour": "blue"}, images=[
        jpeg_bytes((30, 30, 200))])  # fmt: skip
    make_product(title="Mug", category=mugs, attributes={"colour": "white"})
    # One material only: nothing to choose between.
    make_product(title="Other mug", category=mugs, attributes={"material": "ceramic"})
    assert zero_shot_attributes() == ("colour", "category", "audience")
    assert attribute_value_label("audience", "men", "en") == "Men"
    assert attribute_value_label("category", "Mugs", "en") == "Mugs"

    space = space_active()
    vector = space_encoder(space).encode_images([Image.new("RGB", (64, 64), (30, 30, 200))])
    (guess,) = attributes_predict(space=space, image_vectors=vector, names=["audience"])
    assert set(guess) == {"audience"}
    assert guess["audience"].value in {"men", "everyone"}
    assert attributes_predict(space=space, image_vectors=vector[:0]) == []
