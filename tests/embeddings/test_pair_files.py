"""The toolkits' pair files: Recall@K and scores from "text<TAB>base64 image" lines."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from PIL import Image

from catalog.models import Product, ProductImage
from embeddings.catalog_pairs import catalog_pairs
from embeddings.finetuning import FinetuneOptions, file_pairs
from embeddings.models import CaptionEmbedding, EmbeddingSpace, FinetuneRun, ImageEmbedding
from embeddings.spaces import space_active, space_encoder
from embeddings.training.data import collect_examples
from tests.builders import COLOURS, demo_shop_pinned, jpeg_bytes, pairs_tsv, png_bomb, png_bytes

pytestmark = pytest.mark.django_db

RED, BLUE, GREEN = jpeg_bytes(COLOURS[0], seed=1), jpeg_bytes(COLOURS[1], seed=2), png_bytes()
STRIPED = jpeg_bytes(COLOURS[3], stripes=COLOURS[4], seed=3)
BLACK, WHITE = jpeg_bytes(COLOURS[4], seed=4), jpeg_bytes(COLOURS[5], seed=5)
PURPLE, ORANGE = jpeg_bytes(COLOURS[6], seed=6), jpeg_bytes(COLOURS[7], seed=7)

# Duplicates as toolkit files have them: an image under two texts, a text with two
# images (both form one group with everything they pair with), and a repeated line.
PAIRS = [
    ("Red cotton t-shirt", RED),
    ("crimson tee", RED),
    ("Blue linen dress", BLUE),
    ("Blue linen dress", GREEN),
    ("Yellow striped polo", STRIPED),
    ("Black leather shoes", BLACK),
    ("White sneakers", WHITE),
    ("Purple silk scarf", PURPLE),
    ("Orange rain jacket", ORANGE),
    ("Orange rain jacket", ORANGE),
]
CHINESE_PAIRS = [
    ("红色条纹T恤", RED),
    ("蓝色亚麻连衣裙", BLUE),
    ("绿色纯棉衬衫", GREEN),
    ("黄色条纹马球衫", STRIPED),
    ("黑色真皮皮鞋", BLACK),
    ("白色运动鞋", WHITE),
]


def write(tmp_path, name, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def evaluate_json(path, **options) -> dict:
    out = io.StringIO()
    call_command("evaluate_clip", pairs=path, json=True, stdout=out, verbosity=0, **options)
    return json.loads(out.getvalue())


def brute_force_recall(encoder, pairs, k):
    """Recall@K by loops: groups merged set by set, every query ranked by sorting."""
    groups: list[set] = []
    for text, image in pairs:
        members = {("text", text), ("image", image)}
        touching = [g for g in groups if g & members]
        groups = [g for g in groups if not g & members] + [members.union(*touching)]
    group_of = {member: i for i, g in enumerate(groups) for member in g}
    texts = list(dict.fromkeys(text for text, _ in pairs))
    images = list(dict.fromkeys(image for _, image in pairs))
    text_vecs = encoder.encode_texts(texts)
    image_vecs = encoder.encode_images([encoder.decode_image(image) for image in images])

    def recall(queries, query_kind, query_vecs, items, item_kind, item_vecs):
        hits = 0
        for query, vector in zip(queries, query_vecs, strict=True):
            scores = item_vecs @ vector
            top = sorted(range(len(items)), key=lambda i: -scores[i])[:k]
            own = group_of[(query_kind, query)]
            hits += any(group_of[(item_kind, items[i])] == own for i in top)
        return hits / len(queries)

    return (
        recall(texts, "text", text_vecs, images, "image", image_vecs),
        recall(images, "image", image_vecs, texts, "text", text_vecs),
    )


def test_recall_on_a_pair_file_equals_brute_force(tmp_path):
    path = write(tmp_path, "test.tsv", pairs_tsv(PAIRS))
    result = evaluate_json(path)

    assert result["model"] == space_active().name
    assert (result["pairs"], result["texts"], result["images"]) == (10, 8, 8)
    assert result["groups"] == 7  # red (2 texts), blue (2 images) and five singles
    assert result["bad_line_count"] == 0
    encoder = space_encoder(space_active())
    metrics = result["metrics"]
    for k in (1, 5, 10):
        t2i, i2t = brute_force_recall(encoder, PAIRS, k)
        assert metrics[f"t2i_r{k}"] == pytest.approx(t2i, abs=1e-9)
        assert metrics[f"i2t_r{k}"] == pytest.approx(i2t, abs=1e-9)
    assert metrics["mean_recall"] == pytest.approx(
        np.mean([metrics[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10)])
    )


def test_gb18030_and_utf8_files_give_the_same_numbers(tmp_path, capsys):
    utf8 = pairs_tsv(CHINESE_PAIRS)
    gb18030 = pairs_tsv(CHINESE_PAIRS, encoding="gb18030")
    assert utf8 != gb18030
    from_utf8 = evaluate_json(write(tmp_path, "utf8.tsv", utf8))
    from_gb18030 = evaluate_json(write(tmp_path, "gb.tsv", gb18030))
    assert from_utf8["metrics"] == from_gb18030["metrics"]
    assert from_utf8["pairs"] == from_gb18030["pairs"] == len(CHINESE_PAIRS)

    # The table for people: one row named after the model, Recall@1/5/10 both ways.
    call_command("evaluate_clip", pairs=write(tmp_path, "gb.tsv", gb18030), verbosity=0)
    out = capsys.readouterr().out
    for column in ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mean_recall"):
        assert column in out
    assert f"on 6 pairs of {tmp_path / 'gb.tsv'}: 6 texts, 6 images, 6 groups" in out


def score_rows(path) -> list[tuple[int, str]]:
    rows = [line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [(int(number), score) for number, score in rows]


def test_scores_equal_the_match_api(tmp_path, client):
    # JPEGs and a PNG, large enough that JPEG draft decoding would change pixels.
    pairs = [
        ("Red Cotton T-Shirt", jpeg_bytes(COLOURS[0], size=400, seed=1)),
        ("blue linen dress", BLUE),
        ("红色条纹连衣裙", GREEN),
        ("Black leather shoes", jpeg_bytes(COLOURS[4], size=300, stripes=COLOURS[5])),
        ("a photo of nothing in particular", WHITE),
    ]
    source = write(tmp_path, "predict.tsv", pairs_tsv(pairs))
    out = tmp_path / "scores.tsv"
    call_command("score_pairs", source, out=str(out), verbosity=0, batch_size=2)

    rows = score_rows(out)
    assert [number for number, _ in rows] == [1, 2, 3, 4, 5]
    scores = [float(score) for _, score in rows]
    for (text, image), score in zip(pairs, scores, strict=True):
        upload = io.BytesIO(image)
        upload.name = "photo.jpg"
        response = client.post(reverse("api-match"), {"image": upload, "text": text})
        assert response.status_code == 200
        # /api/match rounds both vectors to halfvec (11 significant bits) before the cosine,
        # score_pairs keeps float32: a tolerance, not the same rounding. Measured: <= 5e-5.
        assert score == pytest.approx(response.json()["score"], abs=5e-4)
    # The scores are the model's own cosines, in input order, not all alike.
    encoder = space_encoder(space_active())
    image_vecs = encoder.encode_images([Image.open(io.BytesIO(i)).convert("RGB") for _, i in pairs])
    text_vecs = encoder.encode_texts([t for t, _ in pairs])
    assert scores == pytest.approx((image_vecs * text_vecs).sum(axis=1), abs=2e-6)
    assert len(set(scores)) == len(scores)


def test_bad_lines_are_reported_by_number_and_the_good_ones_processed(tmp_path, settings):
    settings.MAX_UPLOAD_IMAGE_BYTES = 20_000
    settings.MAX_IMAGE_PIXELS = 1_000_000
    big = np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, "PNG")  # noise: about 43 kB, over the 20 kB limit
    assert len(buffer.getvalue()) > 20_000
    lines = [
        pairs_tsv([("Red cotton t-shirt", RED)]),  # 1 good
        b"no tab on this line\n",  # 2
        b"\t" + base64.b64encode(BLUE) + b"\n",  # 3 empty text
        b"Blue dress\tthis is not base64!\n",  # 4
        pairs_tsv([("Not a photo", b"plain text, not an image")]),  # 5
        pairs_tsv([("Noise", buffer.getvalue())]),  # 6 too large
        pairs_tsv([("Bomb", png_bomb(5000, 5000))]),  # 7 too many pixels
        b"\n",  # 8 blank: no pair, no error
        "Café crème".encode("latin-1") + b"\t" + base64.b64encode(GREEN) + b"\n",  # 9
        pairs_tsv([("红色条纹T恤", STRIPED)], encoding="gb18030"),  # 10 good
    ]
    path = write(tmp_path, "predict.tsv", b"".join(lines))
    counts = (
        Product.objects.count(),
        ProductImage.objects.count(),
        ImageEmbedding.objects.count(),
        CaptionEmbedding.objects.count(),
        EmbeddingSpace.objects.count(),
    )
    metrics_before = space_active().metrics

    out, errors = tmp_path / "scores.tsv", io.StringIO()
    with pytest.raises(CommandError, match="7 line") as failed:
        call_command("score_pairs", path, out=str(out), stderr=errors, verbosity=0)
    assert failed.value.returncode == 1
    reported = errors.getvalue()
    for number, reason in [
        (2, "found no tab"),
        (3, "text is empty"),
        (4, "not valid base64"),
        (5, "not a recognised image"),
        (6, "over the limit of 20.0 kB"),
        (7, "over the limit of 1,000,000 pixels"),
        (9, "neither UTF-8 nor GB18030"),
    ]:
        assert f"{path}:{number}: " in reported
        assert reason in reported.split(f"{path}:{number}: ")[1].splitlines()[0]
    assert f"{path}:8:" not in reported
    # One row per line, bad and blank ones with an empty score.
    rows = score_rows(out)
    assert [number for number, _ in rows] == list(range(1, 11))
    assert [bool(score) for _, score in rows] == [True] + [False] * 8 + [True]

    errors = io.StringIO()
    with pytest.raises(CommandError, match="7 line") as failed:
        call_command(
            "evaluate_clip", pairs=path, json=True, stdout=io.StringIO(), stderr=errors, verbosity=0
        )
    assert failed.value.returncode == 1
    assert errors.getvalue().count(f"{path}:") == 7

    # Neither command wrote anything.
    assert counts == (
        Product.objects.count(),
        ProductImage.objects.count(),
        ImageEmbedding.objects.count(),
        CaptionEmbedding.objects.count(),
        EmbeddingSpace.objects.count(),
    )
    assert space_active().metrics == metrics_before


def test_a_model_instead_of_a_space_and_clear_refusals(tmp_path):
    path = write(tmp_path, "test.tsv", pairs_tsv(PAIRS))
    by_model = evaluate_json(path, model="shop-tiny")
    assert by_model["model"] == "shop-tiny@random-seed0"
    # The default space is that same fixed-seed init, so the numbers agree.
    assert by_model["metrics"] == evaluate_json(path)["metrics"]

    with pytest.raises(CommandError, match="cannot read .*missing.tsv"):
        call_command("evaluate_clip", pairs=str(tmp_path / "missing.tsv"), verbosity=0)
    with pytest.raises(CommandError, match="checkpoint file not found"):
        call_command("score_pairs", path, model="shop-tiny", checkpoint="nope.pt", verbosity=0)
    with pytest.raises(CommandError, match="no embedding space named 'ghost'"):
        call_command("score_pairs", path, space="ghost", verbosity=0)
    with pytest.raises(CommandError, match="need --pairs"):
        call_command("evaluate_clip", model="shop-tiny", verbosity=0)
    empty = write(tmp_path, "empty.tsv", b"only text\n")
    with pytest.raises(CommandError, match="has no usable pairs"):
        call_command("evaluate_clip", pairs=empty, stderr=io.StringIO(), verbosity=0)


# --- fine-tuning from pair files ------------------------------------------------------------


@pytest.fixture
def exported_shop(settings, tmp_path):
    """The demo shop, and its pairs exported as the toolkits' train.tsv and dev.tsv."""
    settings.FINETUNE_VAL_FRACTION = 0.25
    demo_shop_pinned(64, ids_after=1_000_000)
    call_command("export_pairs", str(tmp_path / "export"), verbosity=0)
    return tmp_path / "export"


def test_a_model_trained_on_files_only_is_promoted_through_the_catalog_gate(exported_shop):
    active = space_active()
    call_command(
        "finetune_clip",
        pairs=str(exported_shop / "train.tsv"),
        val_pairs=str(exported_shop / "dev.tsv"),
        no_catalog=True,
        scratch=True,
        architecture="shop-micro",
        epochs=20,
        batch_size=16,
        lr=3e-3,
        margin=0.0,
        name="from-files",
        stdout=io.StringIO(),
        verbosity=0,
    )
    space = EmbeddingSpace.objects.get(name="from-files")
    metrics = space.metrics
    assert space_active() == space
    assert "promoted" in metrics["decision"]
    # Gated on the catalog's validation products, trained on the file's lines alone.
    assert metrics["validated_on"] == "catalog"
    lines = (exported_shop / "train.tsv").read_bytes().count(b"\n")
    assert metrics["training"]["train_pairs"] == metrics["pair_files"]["train_pairs"] == lines
    assert metrics["pair_files"]["left_out_groups"] == 0  # dev.tsv is the catalog's val split
    assert metrics["after"]["mean_recall"] > metrics["active_before"]["mean_recall"]
    dev = metrics["pair_files"]
    assert dev["after"]["mean_recall"] > dev["active_before"]["mean_recall"]
    assert active.name == metrics["active_space"]


def test_training_files_merge_with_the_catalog_leave_out_validation_and_report_bad_lines(
    exported_shop,
):
    # One file holding every pair of the shop, validation ones too, and a bad line at its end.
    everything = exported_shop / "all.tsv"
    everything.write_bytes(
        (exported_shop / "train.tsv").read_bytes()
        + (exported_shop / "dev.tsv").read_bytes()
        + b"a line without its image\n"
    )
    bad_line = everything.read_bytes().count(b"\n")
    errors = io.StringIO()
    with pytest.raises(CommandError, match="1 line") as failed:
        call_command(
            "finetune_clip",
            pairs=str(everything),
            val_pairs=str(exported_shop / "dev.tsv"),
            epochs=1,
            batch_size=32,
            no_promote=True,
            name="with-file",
            stdout=io.StringIO(),
            stderr=errors,
            verbosity=0,
        )
    assert failed.value.returncode == 1
    assert f"{everything}:{bad_line}: expected text<TAB>base64 image" in errors.getvalue()
    # The run finished all the same: a candidate trained on the catalog and the good lines.
    run = FinetuneRun.objects.get(space__name="with-file")
    assert run.status == FinetuneRun.Status.SUCCEEDED
    assert run.space.status == EmbeddingSpace.Status.CANDIDATE
    assert run.result["bad_lines"] == 1

    catalog = catalog_pairs(image_size=64)
    files = file_pairs(
        options=FinetuneOptions(pairs=str(everything), val_pairs=str(exported_shop / "dev.tsv")),
        image_size=64,
        catalog_image_product=catalog.image_product,
        on_bad_line=lambda path, bad: None,
    )
    assert run.result["pair_files"]["left_out_groups"] == files.left_out_groups
    # The validation products' lines are left out of training, by their photos...
    assert 0 < files.left_out_groups <= catalog.val_products
    assert not {e.text for e in files.train} & {e.text for e in catalog.val}
    # ...and the training products' lines are those products: the same keys, so the
    # training set has each of their pairs once.
    assert {e.product_key for e in files.train} == {e.product_key for e in catalog.train}
    assert files.catalog_groups > 0
    merged, alone = collect_examples(catalog.train + files.train), collect_examples(catalog.train)
    assert (len(merged.texts), len(merged.images)) == (len(alone.texts), len(alone.images))
    training = run.space.metrics["training"]
    assert training["kind_pairs"] > 0  # the catalog's products also learn their categories
    assert training["train_pairs"] == len(catalog.train) + training["kind_pairs"] + len(files.train)

    # A validation file of photos the catalog trains on measures nothing: left out.
    swapped = file_pairs(
        options=FinetuneOptions(pairs=str(everything), val_pairs=str(exported_shop / "train.tsv")),
        image_size=64,
        catalog_image_product=catalog.image_product,
        on_bad_line=lambda path, bad: None,
    )
    assert swapped.val == []
    assert swapped.left_out_val_groups > 0


def test_without_a_catalog_the_files_validate_and_the_result_stays_a_candidate(exported_shop):
    Product.objects.all().delete()
    call_command(
        "finetune_clip",
        pairs=str(exported_shop / "train.tsv"),
        no_catalog=True,
        epochs=1,
        batch_size=32,
        name="no-catalog",
        stdout=io.StringIO(),
        verbosity=0,
    )
    space = EmbeddingSpace.objects.get(name="no-catalog")
    assert space.status == EmbeddingSpace.Status.CANDIDATE
    assert space.metrics["validated_on"] == "pair files"
    assert "no validation products to decide promotion on" in space.metrics["decision"]
    # Validated on a split of the training file, by group, as the catalog is by product.
    files = space.metrics["pair_files"]
    assert files["val_pairs"] > 0
    assert files["train_pairs"] > 0
    assert files["val_pairs"] + files["train_pairs"] == files["train"]["pairs"]

    with pytest.raises(CommandError, match="no such file"):
        call_command("finetune_clip", pairs="missing.tsv", verbosity=0)
    with pytest.raises(CommandError, match="need training pairs"):
        call_command("finetune_clip", val_pairs=str(exported_shop / "dev.tsv"), verbosity=0)
