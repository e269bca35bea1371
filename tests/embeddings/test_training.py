"""Tests for the embeddings.training package: real (tiny) models and data, no mocks, no database.

Run without Django: `python -m pytest tests/embeddings/test_training.py -p no:django -q`.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image, ImageDraw

from embeddings.encoder import ClipEncoder, ModelSpec, file_sha256
from embeddings.training import (
    Example,
    TrainConfig,
    epoch_batches,
    evaluate,
    finetune,
    load_checkpoint,
    lr_at,
    model_config,
    param_groups,
    recall_at_k,
    save_checkpoint,
    split_by_product,
)
from embeddings.training.data import collect_examples, drop_words, epoch_text_batches
from embeddings.training.schedule import TimeBudget, fit_steps
from embeddings.training.split import WeightedExample

# ------------------------------------------------------------------------- tiny world

COLOURS = {
    "red": ((220, 30, 30), "红色"),
    "green": ((30, 170, 40), "绿色"),
    "blue": ((30, 60, 220), "蓝色"),
    "yellow": ((240, 220, 30), "黄色"),
    "cyan": ((30, 220, 220), "青色"),
    "magenta": ((210, 40, 200), "品红色"),
    "white": ((250, 250, 250), "白色"),
    "black": ((15, 15, 15), "黑色"),
}
SHAPES = {"circle": "圆形", "square": "方形", "triangle": "三角形"}
IMAGE_SIZE = 32
CONTEXT = 16


def shape_image(colour: str, shape: str, index: int) -> Image.Image:
    """A coloured shape on a grey backdrop; position and size vary with `index`."""
    rng = random.Random(f"{colour}/{shape}/{index}")
    size = IMAGE_SIZE * 2  # drawn at 2x, the preprocess scales it down
    grey = rng.randint(110, 150)
    image = Image.new("RGB", (size, size), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.25, 0.38) * size
    cx, cy = (rng.uniform(0.4, 0.6) * size for _ in range(2))
    fill = COLOURS[colour][0]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    return image


def shape_examples(products: list[tuple[str, str]], images_per_product: int = 2) -> list[Example]:
    """Every (text, image) combination of each product: an English and a Chinese title."""
    examples = []
    for colour, shape in products:
        key = f"{colour}-{shape}"
        texts = [f"{colour} {shape}", f"{COLOURS[colour][1]}{SHAPES[shape]}"]
        images = [shape_image(colour, shape, i) for i in range(images_per_product)]
        examples += [Example(key, t, im) for t in texts for im in images]
    return examples


def world() -> tuple[list[Example], list[Example]]:
    """Train on 16 (colour, shape) products, validate on the other 8: each colour once,
    with shapes seen in training, so validation needs colour and shape to generalise."""
    products = [(c, s) for i, c in enumerate(COLOURS) for j, s in enumerate(SHAPES)]
    train = [p for k, p in enumerate(products) if (k // 3 + k % 3) % 3 != 0]
    val = [p for k, p in enumerate(products) if (k // 3 + k % 3) % 3 == 0]
    return shape_examples(train, images_per_product=3), shape_examples(val)


def micro_model(seed: int = 0) -> torch.nn.Module:
    """A CLIP small enough to train in seconds on a CPU."""
    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.CLIPVisionCfg(
            image_size=IMAGE_SIZE, layers=2, width=64, head_width=32, patch_size=8
        ),
        text_cfg=open_clip.CLIPTextCfg(
            context_length=CONTEXT, vocab_size=49408, width=64, heads=2, layers=2
        ),
    )


@pytest.fixture(scope="module")
def micro_tools():
    preprocess = open_clip.image_transform(IMAGE_SIZE, is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=CONTEXT)
    return preprocess, tokenizer


def micro_config(**overrides) -> TrainConfig:
    base = dict(
        epochs=30,
        batch_size=16,
        lr=3e-3,
        warmup_steps=10,
        device="cpu",
        precision="fp32",  # bit-for-bit repeatable on any CPU
        log_every_steps=1,
    )
    return TrainConfig(**{**base, **overrides})


# ----------------------------------------------------------------------------- training


def test_finetune_lowers_loss_and_raises_validation_recall(micro_tools):
    preprocess, tokenizer = micro_tools
    train, val = world()
    events = []
    result = finetune(
        micro_model(), preprocess, tokenizer, train, val, micro_config(), progress=events.append
    )

    # 16 products x 2 titles = 32 pairs per epoch, 2 steps of 16.
    assert result.steps == 60
    assert result.epochs_completed == 30
    assert not result.stopped_early
    assert result.pairs_seen == 32 * 30
    assert result.pairs_per_second > 0
    assert len(result.losses) == 60
    assert len(result.history) == 30
    first, last = result.history[0].train_loss, result.history[-1].train_loss
    assert first > 0.9 * math.log(16)  # chance level for a batch of 16 at the start
    assert last < 0.5 * first, (first, last)

    before, after = result.metrics_before, result.metrics_after
    assert set(after) == {
        "t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mean_recall",
    }  # fmt: skip
    # 8 validation products, 16 texts, 16 images: chance R@1 is 1/8.
    assert before["t2i_r1"] < 0.4
    assert before["i2t_r1"] < 0.4
    assert after["t2i_r1"] >= 0.6, after
    assert after["i2t_r1"] >= 0.6, after
    assert after["mean_recall"] > before["mean_recall"] + 0.2
    assert after == result.history[-1].val

    kinds = Counter(e["event"] for e in events)
    assert kinds == {"start": 1, "step": 60, "epoch": 30, "end": 1}
    epoch_events = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epoch_events] == list(range(1, 31))
    assert epoch_events[-1]["val"] == after
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 61))
    # The share done, for a bar with a fixed total: from 0 to 1, never back.
    fractions = [e["fraction"] for e in events if "fraction" in e]
    assert fractions[0] == 0.0
    assert fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert result.epochs == 30
    assert all(e["complete"] for e in epoch_events)
    # Warmup then cosine decay: peak LR at the end of warmup, ~0 at the end.
    assert steps[9]["lr"] == pytest.approx(3e-3)
    assert steps[-1]["lr"] < 1e-5
    assert all(0 < e["logit_scale"] <= 100.0 + 1e-4 for e in steps)


def test_fraction_done_under_a_budget_never_goes_back():
    clock = TimeBudget(10.0)
    clock.plan(steps_per_epoch=10, epochs=10)
    assert clock.fraction_done(0) == pytest.approx(0.0, abs=1e-3)
    assert clock.fraction_done(50) == 0.5
    clock.total_steps = 200  # the horizon moved out (a faster pace): the bar stays
    assert clock.fraction_done(60) == 0.5
    clock.total_steps = 70  # ...and in (a slower one)
    assert clock.fraction_done(63) == 0.9
    clock.started, clock.deadline = clock.started - 600, clock.deadline - 600  # budget used
    assert clock.fraction_done(64) == 1.0


def test_finetune_is_deterministic_for_a_seed(micro_tools):
    preprocess, tokenizer = micro_tools
    train, val = world()
    config = micro_config(epochs=3, eval_before=False)
    a = finetune(micro_model(), preprocess, tokenizer, train, val, config)
    b = finetune(micro_model(), preprocess, tokenizer, train, val, config)
    c = finetune(micro_model(), preprocess, tokenizer, train, val, micro_config(epochs=3, seed=1))
    assert a.losses == b.losses
    assert a.metrics_after == b.metrics_after
    assert a.losses != c.losses  # another seed shuffles and pairs images differently


def test_time_budget_stops_after_the_current_step(micro_tools):
    preprocess, tokenizer = micro_tools
    train, val = world()
    config = micro_config(max_minutes=1e-9, eval_before=False)
    result = finetune(micro_model(), preprocess, tokenizer, train, val, config)
    assert result.stopped_early
    assert result.steps == 1
    assert result.epochs_completed == 0
    # Counted one way: the epoch it stopped in is epoch 1, marked as cut short.
    assert result.epochs == len(result.history) == 1
    assert not result.history[0].complete
    assert result.history[0].steps == 1
    assert set(result.metrics_after) >= {"t2i_r1", "mean_recall"}


def test_fit_schedule_to_budget_follows_the_pace():
    recent = [0.5] * 10  # seconds per step
    # 100 steps left need 50 s; 20 s fit ~38 of them.
    shortened = fit_steps(200, 100, 20.0, recent, 50, val_seconds=0.0)
    assert 130 <= shortened <= 140
    # Plenty of time: the plan, never more (also after an earlier shortening).
    assert fit_steps(200, 100, 1000.0, recent, 50, val_seconds=0.0) == 200
    # Validations still to come count too.
    assert fit_steps(200, 100, 20.0, recent, 50, val_seconds=5.0) < shortened
    # Out of time: one more step at most.
    assert fit_steps(200, 100, 0.0, recent, 50, val_seconds=0.0) == 101


def test_bad_loss_raises_instead_of_training_on(micro_tools):
    preprocess, tokenizer = micro_tools
    train, val = world()
    with pytest.raises(FloatingPointError):
        finetune(micro_model(), preprocess, tokenizer, train, val, micro_config(lr=float("inf")))


# -------------------------------------------------------------------------- batching


def test_epoch_batches_cover_each_text_once_without_repeating_a_product():
    rng = np.random.default_rng(0)
    # 300 products with 1-3 texts each.
    text_product = np.repeat(np.arange(300), rng.integers(1, 4, size=300))
    batches = epoch_batches(text_product, 64, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert len(set(flat.tolist())) == len(flat)  # no text twice
    assert all(len(b) == 64 for b in batches[:-1])
    assert 32 <= len(batches[-1]) <= 64
    assert len(text_product) - len(flat) < 32  # only a last batch under half is dropped
    for b in batches:
        assert len(set(text_product[b].tolist())) == len(b)  # one text per product
    # Deterministic for a generator state, different for another.
    again = epoch_batches(text_product, 64, np.random.default_rng(1))
    assert all(np.array_equal(x, y) for x, y in zip(batches, again, strict=True))
    other = epoch_batches(text_product, 64, np.random.default_rng(2))
    assert not np.array_equal(batches[0], other[0])


def test_epoch_batches_fall_back_to_repeats_when_unavoidable():
    # One product owns most texts: batches must still fill up.
    text_product = np.array([0] * 20 + [1, 2, 3, 4])
    batches = epoch_batches(text_product, 8, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(24))
    assert [len(b) for b in batches] == [8, 8, 8]
    # A batch larger than the data is capped at it.
    assert [len(b) for b in epoch_batches(np.arange(5), 64, np.random.default_rng(0))] == [5]


def test_examples_reduce_to_distinct_texts_and_images_per_product():
    def fresh():  # new image objects every time, as a generator decoding files would make
        for key, colour in (("a", "red"), ("a", "red"), ("b", "red"), ("a", "blue")):
            yield key, f"{colour} circle", shape_image(colour, "circle", 0)

    data = collect_examples(fresh())
    # Same pixels twice for product a: one image; the same pixels for b: b's own image.
    assert data.products == ["a", "b"]
    assert data.texts == ["red circle", "red circle", "blue circle"]
    assert data.text_product.tolist() == [0, 1, 0]
    assert data.image_product.tolist() == [0, 1, 0]
    assert [ix.tolist() for ix in data.product_images] == [[0, 2], [1]]


def test_weighted_examples_come_up_by_weight_each_epoch():
    image = shape_image("red", "circle", 0)
    plain = collect_examples([("a", "red circle", image), ("b", "blue circle", image)])
    assert plain.text_weight is None  # no weights: every text once, as before
    examples = [
        Example("a", "red circle", image),
        WeightedExample("a", "red round thing", image, 3.0),  # bought: three times an epoch
        Example("b", "blue circle", image),
        WeightedExample("b", "blue round thing", image, 0.5),  # reformulated: every other epoch
        WeightedExample("b", "blue round thing", image, 0.25),  # a repeat keeps the larger
    ]
    data = collect_examples(examples)
    assert data.texts == ["red circle", "red round thing", "blue circle", "blue round thing"]
    assert data.text_weight.tolist() == [1.0, 3.0, 1.0, 0.5]
    rng = np.random.default_rng(0)
    counts = Counter()
    epochs = 400
    for _ in range(epochs):
        batches = epoch_text_batches(data, 2, rng)
        counts.update(int(i) for batch in batches for i in batch)
    assert counts[1] == 3 * epochs
    assert counts[0] == counts[2] == epochs
    assert 0.4 * epochs < counts[3] < 0.6 * epochs


def test_word_dropout_keeps_a_non_empty_ordered_subset():
    rng = np.random.default_rng(0)
    title = "plain red linen dress"
    outs = [drop_words(title, 1.0, rng) for _ in range(200)]
    words = title.split()
    for out in outs:
        kept = out.split()
        assert kept
        assert kept == [w for w in words if w in kept]
    assert len(set(outs)) > 8
    assert "red dress" in outs
    assert drop_words(title, 0.0, rng) == title


def test_word_dropout_drops_chinese_words_whole():
    """Chinese titles have no spaces: jieba's words are what is dropped (红色 亚麻 连衣裙)."""
    rng = np.random.default_rng(0)
    title = "红色亚麻连衣裙"
    outs = {drop_words(title, 1.0, rng) for _ in range(200)}
    assert outs == {
        "红色亚麻连衣裙", "红色亚麻", "红色连衣裙", "亚麻连衣裙", "红色", "亚麻", "连衣裙"
    }  # fmt: skip
    mixed = {drop_words("条纹T恤 cotton", 1.0, rng) for _ in range(200)}
    assert {"条纹 cotton", "T恤", "条纹T恤"} <= mixed
    # The old behaviour, for comparison (bench/finetune.py --chinese): spaces only.
    assert drop_words(title, 1.0, rng, segment_chinese=False) == title


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine():
    lrs = [lr_at(s, 100, 10, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[4] == pytest.approx(0.5)
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.55)  # half-way through the decay
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lr_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_param_groups_exempt_biases_norms_and_logit_scale_from_weight_decay():
    model = micro_model()
    no_decay, decay = param_groups(model, 0.2)
    assert no_decay["weight_decay"] == 0.0
    assert decay["weight_decay"] == 0.2
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "logit_scale" in no_decay_names
    assert "positional_embedding" in no_decay_names
    assert "ln_final.weight" in no_decay_names
    assert "ln_final.bias" in no_decay_names
    assert "visual.transformer.resblocks.0.ln_1.weight" in no_decay_names
    assert "visual.transformer.resblocks.0.attn.in_proj_bias" in no_decay_names
    assert "token_embedding.weight" in decay_names
    assert "visual.transformer.resblocks.0.mlp.c_fc.weight" in decay_names
    assert "text_projection" in decay_names
    assert len(no_decay_names) + len(decay_names) == len(list(model.parameters()))


# --------------------------------------------------------------------------- metrics


def brute_force_recall(image_vecs, image_owner, text_vecs, text_owner, ks):
    """The textbook loop: rank the gallery for each query, find the first right answer."""

    def one_way(queries, q_owner, gallery, g_owner):
        hits = {k: [] for k in ks}
        for q, owner in zip(queries, q_owner, strict=True):
            if owner not in set(g_owner):
                continue
            order = sorted(range(len(gallery)), key=lambda j: -float(gallery[j] @ q))
            first = next(r for r, j in enumerate(order) if g_owner[j] == owner)
            for k in ks:
                hits[k].append(first < k)
        return {k: float(np.mean(v)) for k, v in hits.items()}

    t2i = one_way(text_vecs, text_owner, image_vecs, image_owner)
    i2t = one_way(image_vecs, image_owner, text_vecs, text_owner)
    out = {f"t2i_r{k}": t2i[k] for k in ks} | {f"i2t_r{k}": i2t[k] for k in ks}
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out


@pytest.mark.parametrize("chunk_elements", [1 << 24, 37])
def test_recall_at_k_matches_brute_force(chunk_elements):
    rng = np.random.default_rng(42)
    n_products, dim = 60, 8
    # 1-3 images and 1-3 texts per product; a few products lack images or texts, so
    # some queries have no right answer and are left out.
    image_owner = [f"p{p}" for p in range(n_products) for _ in range(rng.integers(0, 4))]
    text_owner = [f"p{p}" for p in range(n_products) for _ in range(rng.integers(0, 4))]
    centres = rng.normal(size=(n_products, dim))

    def vecs(owners, noise):
        v = np.stack([centres[int(o[1:])] for o in owners]) + noise * rng.normal(
            size=(len(owners), dim)
        )
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    image_vecs, text_vecs = vecs(image_owner, 1.0), vecs(text_owner, 1.0)
    ks = (1, 3, 5, 10)
    got = recall_at_k(image_vecs, image_owner, text_vecs, text_owner, ks, chunk_elements)
    want = brute_force_recall(image_vecs, image_owner, text_vecs, text_owner, ks)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key]), key
    assert 0.05 < got["t2i_r1"] < 0.95  # neither trivial nor hopeless: a real check


def test_recall_at_k_counts_ties_against_the_query():
    # A collapsed model: every vector the same. Ties rank the wrong items first.
    same = np.ones((20, 4), dtype=np.float32) / 2
    owners = list(range(20))
    metrics = recall_at_k(same, owners, same, owners)
    assert metrics["mean_recall"] == 0.0
    # Perfect vectors: one-hot per product.
    eye = np.eye(20, dtype=np.float32)
    assert recall_at_k(eye, owners, eye, owners)["mean_recall"] == 1.0
    assert recall_at_k(eye, owners, eye[::-1], owners)["t2i_r1"] == 0.0


def test_evaluate_encodes_distinct_items_once_and_matches_recall_at_k():
    encoder = ClipEncoder(ModelSpec("shop-tiny", seed=3), device="cpu")
    products = [(c, s) for c in list(COLOURS)[:4] for s in SHAPES]
    examples = shape_examples(products, images_per_product=2)
    # Duplicated examples add no queries: 12 products x 2 titles, x 2 images.
    metrics = evaluate(encoder, examples + examples[:10])

    texts, text_owner, images, image_owner = [], [], [], []
    for key, text, image in examples:
        if text not in texts:
            texts.append(text), text_owner.append(key)
        if not any(image is im for im in images):
            images.append(image), image_owner.append(key)
    assert len(texts) == 24
    assert len(images) == 24
    want = recall_at_k(
        encoder.encode_images(images), image_owner, encoder.encode_texts(texts), text_owner
    )
    assert metrics == pytest.approx(want)
    # The bare-model path (used during training) agrees with the encoder's.
    bare = evaluate(
        encoder.model, examples, preprocess=encoder.preprocess, tokenizer=encoder.tokenizer
    )
    assert bare == pytest.approx(want)
    assert evaluate(encoder, []) == {}


# ----------------------------------------------------------------------------- split


def test_split_by_product_is_deterministic_and_disjoint():
    keys = [f"SKU-{i:05d}" for i in range(10_000)]
    train, val = split_by_product(keys, val_fraction=0.1, seed=0)
    assert not set(train) & set(val)
    assert sorted(train + val) == keys
    assert 900 <= len(val) <= 1100
    assert split_by_product(keys, 0.1, 0) == (train, val)  # same in every call
    assert split_by_product(reversed(keys), 0.1, 0)[1] == val[::-1]  # order-independent
    # A product keeps its side when the catalogue grows.
    _, val_small = split_by_product(keys[:3000], 0.1, 0)
    assert set(val_small) == set(val) & set(keys[:3000])
    # Another seed, another split; duplicates are folded.
    assert split_by_product(keys, 0.1, 1)[1] != val
    train_dup, val_dup = split_by_product(keys[:100] * 2, 0.1, 0)
    assert len(train_dup) + len(val_dup) == 100
    assert split_by_product(keys[:50], 0.0) == (keys[:50], [])
    with pytest.raises(ValueError, match="val_fraction must be within"):
        split_by_product(keys, 1.5)


def test_split_by_product_is_stable_across_processes():
    # Pinned values: the split must not depend on Python's salted hash().
    _, val = split_by_product([f"DEMO-{i:06d}" for i in range(40)], 0.1, 0)
    assert val == split_by_product([f"DEMO-{i:06d}" for i in range(40)], 0.1, 0)[1]
    digest_based = [
        k for k in (f"DEMO-{i:06d}" for i in range(40))
        if int.from_bytes(hashlib.sha256(f"0\x00{k}".encode()).digest()[:8], "big")
        < 0.1 * 2**64
    ]  # fmt: skip
    assert val == digest_based


# ------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trips_through_encoder_loading(tmp_path, micro_tools):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("shop-tiny")
    with torch.no_grad():  # weights unlike the fixed-seed init, so loading must matter
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.logit_scale.fill_(3.0)
    path = tmp_path / "ckpt" / "shop-tiny.safetensors"
    sha = save_checkpoint(model, path)
    assert sha == file_sha256(path)
    assert len(sha) == 64
    assert not list(path.parent.glob("*.tmp"))

    state = load_file(path)
    assert state.keys() == model.state_dict().keys()
    torch.manual_seed(0)
    fresh = open_clip.create_model("shop-tiny")
    load_checkpoint(fresh, path, sha256=sha)
    model.eval(), fresh.eval()
    images = torch.stack([preprocess(shape_image("red", "circle", i)) for i in range(3)])
    tokens = open_clip.get_tokenizer("shop-tiny")(["red circle", "红色圆形", "blue square"])
    with torch.no_grad():
        assert torch.equal(fresh.encode_image(images), model.encode_image(images))
        assert torch.equal(fresh.encode_text(tokens), model.encode_text(tokens))
    assert float(fresh.logit_scale.detach()) == 3.0

    # And through the app's loader, with the checksum checked.
    encoder = ClipEncoder(
        ModelSpec("shop-tiny", checkpoint=str(path), checkpoint_sha256=sha), device="cpu"
    )
    with torch.no_grad():
        want = model.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(
        encoder.encode_texts(["red circle", "红色圆形", "blue square"]), want, atol=1e-6
    )


def test_model_config_returns_the_registered_architecture():
    from embeddings.encoder import MODEL_CONFIG_DIR

    config = model_config("shop-tiny")
    assert config == json.loads((MODEL_CONFIG_DIR / "shop-tiny.json").read_text())
    config["embed_dim"] = 1  # a copy: the registry is untouched
    assert model_config("shop-tiny")["embed_dim"] == 128
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        model_config("no-such-architecture")
