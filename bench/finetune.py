"""Fine-tuning shop-tiny on the demo catalog: throughput and quality against the untrained model.

Django-free, the same recipe as `manage.py finetune_clip` on the demo (split by product,
TrainConfig defaults, a wall-clock budget). Prints training pairs per second, validation
Recall@1/5/10 both ways before (the fixed-seed random init: the baseline) and after, and
the quality bar of the demo: for every "<colour> <category>" query (English and Chinese),
how many of the top 10 products of the whole catalog match both attributes.

    python bench/finetune.py [--products 2000] [--max-minutes 8] [--device cpu]
    python bench/finetune.py --chinese [--products 2000] [--max-minutes 8]

`--chinese` trains twice with the same seed and budget, word dropout splitting titles on
spaces only (as before: Chinese titles are never cut) and then with Chinese titles cut
into jieba's words, and prints the "<colour><category>" precision of both, Chinese and
English, and the ratio.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from catalog.demo_catalog import (  # noqa: E402
    CATEGORIES,
    COLOURS,
    demo_products,
    render_product_image,
)
from catalog.images import decode_image  # noqa: E402
from embeddings.encoder import ClipEncoder, ModelSpec  # noqa: E402
from embeddings.training import (  # noqa: E402
    TrainConfig,
    finetune,
    gibberish_queries,
    kind_examples,
    similarity_floors_calibrate,
    split_by_product,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devices import demo_examples  # noqa: E402

from embeddings.training.captions import KIND_CAPTION_WEIGHT  # noqa: E402


def colour_category_precision(encoder: ClipEncoder, count: int, examples) -> dict:
    """Top-10 precision of "<colour> <category>" queries over all products' best image."""
    products = list(demo_products(count))
    attributes = {p.sku: (p.colour, p.attributes["category"]) for p in products}
    images = {}
    for example in examples:
        images.setdefault(id(example.image), (example.product_key, example.image))
    owners = [owner for owner, _ in images.values()]
    image_vecs = encoder.encode_images([image for _, image in images.values()])
    skus = sorted(set(owners))
    owner_index = np.array([skus.index(o) for o in owners])
    results = {}
    for lang in ("en", "zh"):
        precisions = []
        for colour in COLOURS.values():
            for category in CATEGORIES.values():
                query = (
                    f"{colour.name} {category.name}"
                    if lang == "en"
                    else f"{colour.zh}{category.zh}"
                )
                scores = image_vecs @ encoder.encode_texts([query])[0]
                best = np.full(len(skus), -2.0)
                np.maximum.at(best, owner_index, scores)
                top = np.argsort(-best)[:10]
                hits = sum(attributes[skus[i]] == (colour.name, category.key) for i in top)
                precisions.append(hits / 10)
        precisions = np.array(precisions)
        results[lang] = {
            "mean_precision_at_10": float(precisions.mean()),
            "queries_with_9_of_10": float((precisions >= 0.9).mean()),
            "queries": len(precisions),
        }
    return results


HELD_OUT_PRODUCTS = 384  # two Latin-square blocks after the catalog: each kind 24 times


def held_out_photos(count: int) -> tuple[list, list]:
    """Photos of products the catalog never had (indices after its `count`), balanced by
    kind: (products, [(product, photo)...]), every photo of each in its first colour."""
    products = list(demo_products(HELD_OUT_PRODUCTS, start=count))
    photos = [
        (p, decode_image(render_product_image(p, i), draft_size=64))
        for p in products
        for i in range(p.image_count)
    ]
    return products, photos


def _top_products(scores: np.ndarray, owner_index: np.ndarray, n: int, k: int = 10):
    """Per row of `scores` (columns owned by products), the k products with the best column."""
    best = np.full((scores.shape[0], n), -2.0, dtype=np.float32)
    for row, column_scores in enumerate(scores):
        np.maximum.at(best[row], owner_index, column_scores)
    return np.argsort(-best, axis=1)[:, :k]


def kind_at_10(encoder: ClipEncoder, count: int, examples) -> dict:
    """How often what comes back is the same kind (category) as a held-out product's photo.

    * image_to_image (photo search, similar products): the 10 catalog products whose
      photos are nearest each held-out photo;
    * image_to_caption (`/api/captions/`): its 10 nearest catalog captions (titles in both
      languages and descriptions);
    * text_category: "<category>" queries, English and Chinese, over the held-out photos
      (their best photo per product);
    with the same share for colour beside it, so kind is not bought with colour.
    """
    catalog = {p.sku: p for p in demo_products(count)}
    images = {}
    for example in examples:
        images.setdefault(id(example.image), (example.product_key, example.image))
    skus = sorted(catalog)
    owner = np.array([skus.index(sku) for sku, _ in images.values()])
    kinds = np.array([catalog[s].attributes["category"] for s in skus])
    colours = np.array([catalog[s].colour for s in skus])
    catalog_vecs = encoder.encode_images([image for _, image in images.values()])
    held, photos = held_out_photos(count)
    photo_vecs = encoder.encode_images([image for _, image in photos])
    photo_kind = np.array([p.attributes["category"] for p, _ in photos])
    photo_colour = np.array([p.colour for p, _ in photos])

    top = _top_products(photo_vecs @ catalog_vecs.T, owner, len(skus))
    report = {
        "image_to_image": {
            "kind_at_10": float((kinds[top] == photo_kind[:, None]).mean()),
            "colour_at_10": float((colours[top] == photo_colour[:, None]).mean()),
        }
    }
    captions = [(s, t) for s in skus for t in (catalog[s].title, catalog[s].title_zh)]
    captions += [(s, catalog[s].description) for s in skus]
    caption_vecs = encoder.encode_texts([t for _, t in captions])
    caption_owner = np.array([skus.index(s) for s, _ in captions])
    top = np.argsort(-(photo_vecs @ caption_vecs.T), axis=1)[:, :10]
    report["image_to_caption"] = {
        "kind_at_10": float((kinds[caption_owner[top]] == photo_kind[:, None]).mean()),
        "colour_at_10": float((colours[caption_owner[top]] == photo_colour[:, None]).mean()),
    }
    held_index = {p.sku: i for i, p in enumerate(held)}
    photo_owner = np.array([held_index[p.sku] for p, _ in photos])
    held_kinds = np.array([p.attributes["category"] for p in held])
    for lang in ("en", "zh"):
        keys = list(CATEGORIES)
        queries = [CATEGORIES[k].name if lang == "en" else CATEGORIES[k].zh for k in keys]
        scores = encoder.encode_texts(queries) @ photo_vecs.T
        top = _top_products(scores, photo_owner, len(held))
        hits = held_kinds[top] == np.array(keys)[:, None]
        report[f"text_category_{lang}"] = {"kind_at_10": float(hits.mean())}
    return report


def floors_report(encoder: ClipEncoder, val, examples) -> dict:
    """Both similarity floors calibrated on `val`, and what unseen nonsense finds with each:
    products of the whole catalog whose best photo passes, per random-string query."""
    images = {}
    for example in examples:
        images.setdefault(id(example.image), (example.product_key, example.image))
    owners = [owner for owner, _ in images.values()]
    calibration = similarity_floors_calibrate(
        encoder=encoder, examples=val, catalog_images=len(images)
    )
    image_vecs = encoder.encode_images([image for _, image in images.values()])
    skus = sorted(set(owners))
    owner_index = np.array([skus.index(o) for o in owners])
    nonsense = encoder.encode_texts(gibberish_queries(100, seed=99)) @ image_vecs.T
    found = {}
    for name, floor in (
        ("floor", calibration.similarity_floor),
        ("unknown_words_floor", calibration.unknown_words_floor),
    ):
        counts = []
        for row in nonsense:
            best = np.full(len(skus), -2.0)
            np.maximum.at(best, owner_index, row)
            counts.append(int((best >= floor).sum()))
        found[name] = {
            "value": floor,
            "nonsense_products_mean": float(np.mean(counts)),
            "nonsense_queries_finding_nothing": float(np.mean([c == 0 for c in counts])),
        }
    return {"calibration": calibration.report, "unseen_nonsense_queries": found}


def demo_kind_examples(count: int, train, weight: float = KIND_CAPTION_WEIGHT) -> list:
    """Kind captions (embeddings.training.captions) of the training products, as the
    catalog's fine-tuning makes them from each product's category names."""
    images: dict = {}
    for example in train:
        images.setdefault(example.product_key, {})[id(example.image)] = example.image
    examples = []
    for product in demo_products(count):
        if product.sku in images:
            names = (product.category[-1], product.attributes["category_path_zh"][-1])
            pictures = list(images[product.sku].values())
            examples += kind_examples(product.sku, names, pictures, weight=weight)
    return examples


def train_and_measure(args, train, val, examples, **config) -> dict:
    encoder = ClipEncoder(ModelSpec("shop-tiny", seed=0), device=args.device)
    result = finetune(
        encoder.model,
        encoder.preprocess,
        encoder.tokenizer,
        train,
        val,
        TrainConfig(
            max_minutes=None if args.epochs else args.max_minutes,
            device=args.device,
            **({"epochs": args.epochs} if args.epochs else {}),
            **config,
        ),
    )
    encoder.model = encoder.model.to(encoder.dtype).eval()
    return {
        "epochs_completed": result.epochs_completed,
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1),
        "mean_recall_after": result.metrics_after["mean_recall"],
        "colour_category": colour_category_precision(encoder, args.products, examples),
        "floors": floors_report(encoder, val, examples),
    }


def chinese_words_bench(args, train, val, examples) -> None:
    """Word dropout on spaces only (the baseline) against jieba's words, same budget."""
    before = train_and_measure(args, train, val, examples, word_dropout_segment_chinese=False)
    after = train_and_measure(args, train, val, examples, word_dropout_segment_chinese=True)
    zh_before = before["colour_category"]["zh"]["mean_precision_at_10"]
    zh_after = after["colour_category"]["zh"]["mean_precision_at_10"]
    print(
        json.dumps(
            {
                "products": args.products,
                "max_minutes": args.max_minutes,
                "spaces_only (before)": before,
                "jieba_words (after)": after,
                "zh_precision_ratio_after_over_before": zh_after / max(zh_before, 1e-9),
            },
            indent=2,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--max-minutes", type=float, default=8.0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--chinese", action="store_true", help="word dropout: spaces vs jieba")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="train this many epochs instead of --max-minutes, so that runs compared take "
        "the same steps however busy the machine is",
    )
    parser.add_argument(
        "--quick", action="store_true", help="skip the untrained model's figures and the floors"
    )
    parser.add_argument(
        "--kind-captions", action="store_true", help="train on kind captions as well"
    )
    parser.add_argument("--kind-weight", type=float, default=KIND_CAPTION_WEIGHT)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a TrainConfig field for this run, e.g. --set batch_size=64",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    examples = demo_examples(args.products)
    train_keys, val_keys = split_by_product({e.product_key: None for e in examples})
    val_set = set(val_keys)
    train = [e for e in examples if e.product_key not in val_set]
    val = [e for e in examples if e.product_key in val_set]
    if args.kind_captions:
        train += demo_kind_examples(args.products, train, args.kind_weight)
    if args.chinese:
        chinese_words_bench(args, train, val, examples)
        return
    spec = ModelSpec("shop-tiny", seed=0)
    untrained = ClipEncoder(spec, device=args.device)
    baseline = None if args.quick else colour_category_precision(untrained, args.products, examples)
    kind_before = None if args.quick else kind_at_10(untrained, args.products, examples)
    encoder = ClipEncoder(spec, device=args.device)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    result = finetune(
        encoder.model,
        encoder.preprocess,
        encoder.tokenizer,
        train,
        val,
        TrainConfig(
            max_minutes=None if args.epochs else args.max_minutes,
            device=args.device,
            **({"epochs": args.epochs} if args.epochs else {}),
            **overrides,
        ),
    )
    # Training leaves fp32 weights; the encoder serves in its own precision (fp16 on GPU).
    encoder.model = encoder.model.to(encoder.dtype).eval()
    report = {
        "products": args.products,
        "config": overrides,
        "kind_captions": args.kind_captions and args.kind_weight,
        "train_pairs_per_epoch": len({(e.product_key, e.text) for e in train}),
        "val_products": len(val_keys),
        "device": result.device,
        "precision": result.precision,
        "batch_size": result.batch_size,
        "epochs_completed": result.epochs_completed,
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1),
        "load_average": os.getloadavg(),
        "pairs_per_second": round(result.pairs_per_second, 1),
        "recall_before": result.metrics_before,
        "recall_after": result.metrics_after,
        "mean_recall_ratio_after_over_before": (
            result.metrics_after["mean_recall"] / max(result.metrics_before["mean_recall"], 1e-9)
        ),
        "colour_category_before": baseline,
        "colour_category_after": colour_category_precision(encoder, args.products, examples),
        "kind_before": kind_before,
        "kind_after": kind_at_10(encoder, args.products, examples),
        "floors": None if args.quick else floors_report(encoder, val, examples),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
