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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from catalog.demo_catalog import CATEGORIES, COLOURS, demo_products  # noqa: E402
from embeddings.encoder import ClipEncoder, ModelSpec  # noqa: E402
from embeddings.training import (  # noqa: E402
    TrainConfig,
    finetune,
    gibberish_queries,
    similarity_floors_calibrate,
    split_by_product,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devices import demo_examples  # noqa: E402


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
        help="--chinese: train this many epochs each instead of --max-minutes, so both runs "
        "take the same steps however busy the machine is",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    examples = demo_examples(args.products)
    train_keys, val_keys = split_by_product({e.product_key: None for e in examples})
    val_set = set(val_keys)
    train = [e for e in examples if e.product_key not in val_set]
    val = [e for e in examples if e.product_key in val_set]
    if args.chinese:
        chinese_words_bench(args, train, val, examples)
        return
    spec = ModelSpec("shop-tiny", seed=0)
    baseline = colour_category_precision(
        ClipEncoder(spec, device=args.device), args.products, examples
    )
    encoder = ClipEncoder(spec, device=args.device)
    result = finetune(
        encoder.model,
        encoder.preprocess,
        encoder.tokenizer,
        train,
        val,
        TrainConfig(max_minutes=args.max_minutes, device=args.device),
    )
    # Training leaves fp32 weights; the encoder serves in its own precision (fp16 on GPU).
    encoder.model = encoder.model.to(encoder.dtype).eval()
    report = {
        "products": args.products,
        "train_pairs_per_epoch": len({(e.product_key, e.text) for e in train}),
        "val_products": len(val_keys),
        "device": result.device,
        "precision": result.precision,
        "batch_size": result.batch_size,
        "epochs_completed": result.epochs_completed,
        "train_seconds": round(result.train_seconds, 1),
        "pairs_per_second": round(result.pairs_per_second, 1),
        "recall_before": result.metrics_before,
        "recall_after": result.metrics_after,
        "mean_recall_ratio_after_over_before": (
            result.metrics_after["mean_recall"] / max(result.metrics_before["mean_recall"], 1e-9)
        ),
        "colour_category_before": baseline,
        "colour_category_after": colour_category_precision(encoder, args.products, examples),
        "floors": floors_report(encoder, val, examples),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
