"""POST /api/ask/: each type of question about a product's photo or an uploaded one, answered
in the question's language; every bad input a clear 400 naming its field."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.demo_catalog import demo_product, render_product_image
from catalog.models import Product
from catalog.services import demo_catalog_load
from embeddings.zero_shot import zero_shot_cache_clear
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db

SHOP_SIZE = 32


@pytest.fixture(autouse=True)
def fresh_zero_shot():
    """The zero-shot scorers are cached per space in-process: each test's catalog is its own."""
    zero_shot_cache_clear()
    yield
    zero_shot_cache_clear()


@pytest.fixture
def demo_shop(embed_on_commit, settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0  # the random tiny model's similarities are all low
    with embed_on_commit():
        demo_catalog_load(count=SHOP_SIZE, seed=0)
    return Product.objects.order_by("sku")


def ask(client, **data):
    return client.post(reverse("api-ask"), data=json.dumps(data), content_type="application/json")


def upload(data: bytes, name="photo.jpg", content_type="image/jpeg"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def test_each_type_of_question_about_a_product(client, demo_shop):
    product = demo_shop.first()
    expected = {
        "What colour is this?": ("attribute", "en", "colour"),
        "图中服装是什么颜色?": ("attribute", "zh", "colour"),
        "what material is this?": ("attribute", "en", "material"),
        "这款衬衫的面料是什么?": ("attribute", "zh", "material"),
        "Is it striped?": ("yes_no", "en", "pattern"),
        "是棉质的吗?": ("yes_no", "zh", "material"),
        "Describe this photo": ("describe", "en", ""),
        "请对给定的图片进行描述。": ("describe", "zh", ""),
        "find a red t-shirt": ("find", "en", ""),
        "How much is it?": ("unsupported", "en", ""),
        "这个多少钱?": ("unsupported", "zh", ""),
        "¿De qué color es?": ("unsupported", "", ""),
    }
    for question, (kind, lang, attribute) in expected.items():
        response = ask(client, product_id=product.pk, question=question)
        assert response.status_code == 200, (question, response.json())
        body = response.json()
        assert (body["type"], body["lang"], body["attribute"]) == (kind, lang, attribute), question
        assert set(body) == {
            "space", "type", "lang", "attribute", "answer", "confidence", "alternatives",
            "evidence", "search_id",
        }  # fmt: skip
        chinese = any("\u4e00" <= ch <= "\u9fff" for ch in body["answer"])
        assert chinese == (lang in ("zh", "")), (question, body["answer"])  # "": both languages
        if kind in ("attribute", "yes_no", "describe"):
            assert 0.0 <= body["confidence"] <= 1.0
            assert body["evidence"]["attributes"]
        else:
            assert body["confidence"] is None
        if kind in ("attribute", "yes_no"):
            guess = body["evidence"]["attributes"][0]
            assert guess["name"] == attribute
            assert body["alternatives"]
            assert {a["name"] for a in body["alternatives"]} == {attribute}
            assert guess["value"] not in [a["value"] for a in body["alternatives"]]
            assert guess["confidence"] >= max(a["confidence"] for a in body["alternatives"])
            if kind == "attribute":
                assert guess["label"] in body["answer"]
    # describe lists the catalog captions nearest the photo; find, the products it found.
    body = ask(client, product_id=product.pk, question="Describe this photo", limit=3).json()
    assert len(body["evidence"]["captions"]) == 3
    body = ask(client, product_id=product.pk, question="find a red t-shirt").json()
    assert body["evidence"]["products"]
    assert body["search_id"]
    assert body["evidence"]["products"][0]["title"] in body["answer"]


def test_an_uploaded_photo_is_answered_like_the_product_it_shows(client, demo_shop):
    product = demo_shop.first()
    photo = product.images.order_by("position", "id").first().file.read()
    by_product = ask(client, product_id=product.pk, question="What colour is this?").json()
    response = client.post(
        reverse("api-ask"), {"image": upload(photo), "question": "What colour is this?"}
    )
    assert response.status_code == 200, response.json()
    by_photo = response.json()
    assert by_photo["answer"] == by_product["answer"]
    assert by_photo["confidence"] == pytest.approx(by_product["confidence"], abs=0.02)


def test_a_question_can_be_a_form_field_beside_a_product_id(client, demo_shop):
    product = demo_shop.first()
    response = client.post(reverse("api-ask"), {"product_id": product.pk, "question": "颜色?"})
    assert response.status_code == 200
    assert response.json()["attribute"] == "colour"


BAD_QUESTIONS = {
    "": "Ask a question",
    "   ": "Ask a question",
    "x" * 501: "at most 500",
    "x" * 10_000: "at most 500",
    "what\x00colour": "control characters",
    "what\x07colour\x1b[31m": "control characters",
    "?? 123 !!": "words",
}


@pytest.mark.parametrize("question", BAD_QUESTIONS, ids=lambda q: repr(q[:12]))
def test_a_bad_question_is_a_400_naming_it(client, demo_shop, question):
    response = ask(client, product_id=demo_shop.first().pk, question=question)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["question"]
    assert BAD_QUESTIONS[question] in response.json()["error"]


def test_binary_bytes_as_the_question_are_a_400(client, demo_shop):
    body = (
        b'--B\r\nContent-Disposition: form-data; name="question"\r\n\r\n\xff\xfe\x00\x81colour'
        b'\r\n--B\r\nContent-Disposition: form-data; name="product_id"\r\n\r\n'
        + str(demo_shop.first().pk).encode()
        + b"\r\n--B--\r\n"
    )
    response = client.post(
        reverse("api-ask"), data=body, content_type="multipart/form-data; boundary=B"
    )
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["question"]


def test_bad_photos_and_products_are_400s_naming_the_field(client, demo_shop, make_product):
    question = "What colour is this?"
    no_photo = make_product(title="Plain mug")
    cases = [
        ({"question": question}, "image", "either a photo"),
        ({"question": question, "product_id": 99_999_999}, "product_id", "Unknown product"),
        ({"question": question, "product_id": "red"}, "product_id", "whole number"),
        ({"question": question, "product_id": no_photo.pk}, "product_id", "no photo"),
    ]
    for data, field, message in cases:
        response = ask(client, **data)
        assert response.status_code == 400, data
        assert field in response.json()["errors"], data
        assert message in response.json()["error"], data
    url = reverse("api-ask")
    for photo in [
        upload(b"just some text", name="notes.txt", content_type="text/plain"),
        upload(corrupt_jpeg_bytes()),
    ]:
        response = client.post(url, {"image": photo, "question": question})
        assert response.status_code == 400
        assert list(response.json()["errors"]) == ["image"], response.json()
    both = client.post(
        url, {"image": upload(jpeg_bytes()), "product_id": demo_shop.first().pk, "question": "?"}
    )
    assert both.status_code == 400
    response = client.post(url, data="[]", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]


def test_the_api_is_in_the_schema(client):
    schema = client.get(reverse("api-schema"), {"format": "json"}).json()
    operation = schema["paths"]["/api/ask/"]["post"]
    assert set(operation["requestBody"]["content"]) == {
        "application/json",
        "multipart/form-data",
    }
    answer = schema["components"]["schemas"]["PhotoAnswer"]["properties"]
    assert {"type", "answer", "confidence", "alternatives", "evidence"} <= set(answer)


def test_a_held_out_demo_photo_is_asked_about_in_both_languages(client, demo_shop):
    """A demo photo the catalog does not hold, rendered here: every answer is one of the
    catalog's values for the attribute asked, in the question's language."""
    held_out = demo_product(SHOP_SIZE + 500)
    photo = upload(render_product_image(held_out, 0))
    for question, lang in [("What pattern is it?", "en"), ("这是什么图案？", "zh")]:
        photo.seek(0)
        body = client.post(reverse("api-ask"), {"image": photo, "question": question}).json()
        assert (body["type"], body["attribute"], body["lang"]) == ("attribute", "pattern", lang)
        patterns = {"plain", "striped", "dotted", "checked"}
        assert body["evidence"]["attributes"][0]["value"] in patterns


def test_the_product_page_asks_about_its_photo(client, demo_shop):
    product = demo_shop.first()
    page = client.get(reverse("product-detail", args=[product.pk])).content.decode()
    assert 'id="ask"' in page
    assert reverse("product-ask", args=[product.pk]) in page

    url = reverse("product-ask", args=[product.pk])
    response = client.post(url, {"question": "What colour is this?"})
    assert response.status_code == 200
    answer = response.context["ask"]["answer"]
    assert answer.type == "attribute"
    page = response.content.decode()
    assert 'id="ask-answer"' in page
    assert answer.answer in page
    assert f"({answer.confidence:.2f})" in page
    assert 'id="ask-alternatives"' in page

    response = client.post(url, {"question": "图中服装是什么颜色?"})
    assert response.context["ask"]["answer"].lang == "zh"
    assert response.context["ask"]["answer"].answer in response.content.decode()

    response = client.post(url, {"question": "   "})
    assert response.status_code == 400
    assert "Ask a question about the photo." in response.content.decode()
    assert client.get(url).status_code == 405


ACCURACY_QUESTIONS = {
    "colour": {"en": "What colour is this?", "zh": "图中服装是什么颜色？"},
    "pattern": {"en": "What pattern does it have?", "zh": "这是什么图案？"},
    "material": {"en": "What material is this?", "zh": "这款衬衫的面料是什么？"},
    "category": {"en": "What kind of product is this?", "zh": "这是什么东西？"},
}
TRAINED_SHOP = 96
HELD_OUT = 24


def drawn(product) -> dict[str, str]:
    """What the demo drew in a product's first photo."""
    return {
        "colour": product.colours[0],
        "pattern": product.pattern,
        "material": product.material,
        "category": product.attributes["category"],
    }


@pytest.mark.django_db(transaction=True)
def test_answers_on_held_out_demo_photos_with_a_trained_model(client, settings, capsys):
    """A small demo model trained here (shop-micro, the catalog's photos and titles), then
    questions in English and Chinese about demo photos drawn here that the catalog does not
    hold, scored against what was drawn."""
    from django.core.management import call_command

    from embeddings.spaces import space_active
    from tests.builders import demo_shop_pinned

    settings.FINETUNE_VAL_FRACTION = 0.25
    demo_shop_pinned(TRAINED_SHOP, ids_after=2_000_000)
    call_command(
        "finetune_clip", scratch=True, architecture="shop-micro", epochs=30, batch_size=16,
        lr=3e-3, margin=-1.0, name="ask-trained", verbosity=0,
        no_kind_captions=True,  # as test_zero_shot: the micro model learns colour from titles
    )  # fmt: skip
    assert space_active().name == "ask-trained"
    held_out = [demo_product(TRAINED_SHOP + 1000 + i) for i in range(HELD_OUT)]
    hits = {(name, lang): 0 for name in ACCURACY_QUESTIONS for lang in ("en", "zh")}
    for product in held_out:
        photo = render_product_image(product, 0)
        truth = drawn(product)
        for name, questions in ACCURACY_QUESTIONS.items():
            for lang, question in questions.items():
                response = client.post(
                    reverse("api-ask"), {"image": upload(photo), "question": question}
                )
                body = response.json()
                assert (body["type"], body["attribute"], body["lang"]) == ("attribute", name, lang)
                guess = body["evidence"]["attributes"][0]
                assert guess["label"] in body["answer"]
                hits[name, lang] += guess["value"] == truth[name]
    accuracy = {key: n / HELD_OUT for key, n in hits.items()}
    with capsys.disabled():
        print(f"\n/api/ask/ accuracy on {HELD_OUT} held-out demo photos (shop-micro):")
        for (name, lang), value in accuracy.items():
            print(f"  {name:9} {lang}  {value:.2f}")
    # Chance is 1/12 for colour, 1/4 for pattern, 1/16 for material and kind. Measured: colour
    # 0.62 in both languages, pattern 0.29, material and kind 0.00: this small model reads
    # colour, hardly pattern, and neither material nor kind (the demo model's training is
    # where that is fixed). The floor: colour well above chance in both languages.
    assert min(accuracy["colour", lang] for lang in ("en", "zh")) >= 0.4
