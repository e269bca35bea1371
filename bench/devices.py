"""CPU vs CUDA: encoder and fine-tuning throughput, and whether GPU vectors agree with CPU ones.

Django-free, on the demo catalog. Each figure is printed against the CPU baseline measured
in the same run. On a machine without CUDA it prints the CPU figures only.

    python bench/devices.py [--products 2000] [--train-minutes 3] [--out result.json]
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from catalog.demo_catalog import demo_products, render_product_image  # noqa: E402
from catalog.images import decode_image  # noqa: E402
from embeddings.encoder import ClipEncoder, ModelSpec  # noqa: E402
from embeddings.training import Example, TrainConfig, finetune, split_by_product  # noqa: E402


def demo_examples(count: int) -> list[Example]:
    examples = []
    for product in demo_products(count):
        for i in range(product.image_count):
            image = decode_image(render_product_image(product, i), draft_size=64)
            examples += [Example(product.sku, t, image) for t in (product.title, product.title_zh)]
    return examples


def throughput(fn, items, repeat: int = 2) -> float:
    fn(items[:64])  # warm-up (CUDA context, kernels)
    start = time.perf_counter()
    for _ in range(repeat):
        fn(items)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return repeat * len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--train-minutes", type=float, default=3.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)

    examples = demo_examples(args.products)
    images = list({id(e.image): e.image for e in examples}.values())
    texts = sorted({e.text for e in examples})
    spec = ModelSpec("shop-tiny", seed=0)
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    vectors = {}
    for device in devices:
        encoder = ClipEncoder(spec, device=device)
        report[f"{device}_precision"] = encoder.precision
        report[f"{device}_images_per_s"] = throughput(
            lambda batch, e=encoder: e.encode_images(batch, batch_size=256), images[:2048]
        )
        report[f"{device}_texts_per_s"] = throughput(
            lambda batch, e=encoder: e.encode_texts(batch, batch_size=512), texts[:4096]
        )
        vectors[device] = (encoder.encode_images(images[:512]), encoder.encode_texts(texts[:512]))
    if "cuda" in vectors:
        for kind, i in (("image", 0), ("text", 1)):
            cosine = (vectors["cpu"][i] * vectors["cuda"][i]).sum(axis=1)
            report[f"cuda_vs_cpu_{kind}_cosine_min"] = float(cosine.min())
        for kind in ("images", "texts"):
            report[f"cuda_over_cpu_{kind}"] = (
                report[f"cuda_{kind}_per_s"] / report[f"cpu_{kind}_per_s"]
            )

    train_keys, val_keys = split_by_product({e.product_key: None for e in examples})
    val_set = set(val_keys)
    train = [e for e in examples if e.product_key not in val_set]
    val = [e for e in examples if e.product_key in val_set]
    for device in devices:
        minutes = args.train_minutes if device == "cuda" or len(devices) == 1 else 0.5
        model = ClipEncoder(spec, device=device)
        result = finetune(
            model.model,
            model.preprocess,
            model.tokenizer,
            train,
            val,
            TrainConfig(device=device, max_minutes=minutes, eval_before=device == devices[-1]),
        )
        report[f"{device}_train_pairs_per_s"] = result.pairs_per_second
        report[f"{device}_train_precision"] = result.precision
        report[f"{device}_train_batch_size"] = result.batch_size
        report[f"{device}_train_epochs"] = result.epochs_completed
        report[f"{device}_val_mean_recall_after"] = result.metrics_after.get("mean_recall")
        if result.metrics_before:
            report["val_mean_recall_before"] = result.metrics_before.get("mean_recall")
    if "cuda" in devices:
        report["cuda_over_cpu_training"] = (
            report["cuda_train_pairs_per_s"] / report["cpu_train_pairs_per_s"]
        )

    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
