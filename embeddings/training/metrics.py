"""Retrieval evaluation: text-to-image and image-to-text Recall@K, where the right answers
for a query are everything belonging to the same product."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from embeddings.encoder import ClipEncoder

from .data import (
    ExampleSet,
    Preprocess,
    Tokenizer,
    as_pil,
    batch_pixels,
    collect_examples,
    prepare_examples,
)
from .precision import autocast, autocast_dtype


def recall_at_k(
    image_vecs: np.ndarray,
    image_owner: Sequence[Hashable] | np.ndarray,
    text_vecs: np.ndarray,
    text_owner: Sequence[Hashable] | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    chunk_elements: int = 1 << 24,
) -> dict[str, float]:
    """Text-to-image and image-to-text Recall@K with several right answers per query.

    A text's right answers are all images with the same owner (product), an image's all
    texts with its owner; a query scores a hit at K when any right answer ranks in its top
    K by dot product (cosine for L2-normalised vectors). Ties count against the query (a
    wrong item scoring the same as the best right one ranks above it), so a collapsed
    model that maps everything to one vector scores ~0, not 1. Queries whose owner has
    nothing on the other side are left out of the average.

    Returns `t2i_r{k}` and `i2t_r{k}` for each k, and `mean_recall`, their mean. The
    similarity matrix is computed `chunk_elements` entries at a time (64 MB of float32 by
    default), so 10k x 10k never materialises at once.
    """
    image_vecs = np.asarray(image_vecs, dtype=np.float32)
    text_vecs = np.asarray(text_vecs, dtype=np.float32)
    if len(image_vecs) != len(image_owner) or len(text_vecs) != len(text_owner):
        raise ValueError("each vector needs exactly one owner")
    # Map owners (any hashable: SKUs, ids) to small ints on both sides at once.
    owners = list(image_owner) + list(text_owner)
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(o, len(index)) for o in owners), np.int64, len(owners))
    img_codes, txt_codes = codes[: len(image_vecs)], codes[len(image_vecs) :]

    t2i = _best_right_rank(text_vecs, txt_codes, image_vecs, img_codes, chunk_elements)
    i2t = _best_right_rank(image_vecs, img_codes, text_vecs, txt_codes, chunk_elements)
    metrics: dict[str, float] = {}
    for name, ranks in (("t2i", t2i), ("i2t", i2t)):
        valid = ranks >= 0
        for k in ks:
            metrics[f"{name}_r{k}"] = float((ranks[valid] < k).mean()) if valid.any() else 0.0
    values = list(metrics.values())
    metrics["mean_recall"] = float(np.mean(values)) if values else 0.0
    return metrics


def _best_right_rank(
    queries: np.ndarray,
    query_codes: np.ndarray,
    gallery: np.ndarray,
    gallery_codes: np.ndarray,
    chunk_elements: int,
) -> np.ndarray:
    """0-based rank of each query's best right answer (-1: the query has none)."""
    ranks = np.full(len(queries), -1, dtype=np.int64)
    if len(queries) == 0 or len(gallery) == 0:
        return ranks
    rows = max(1, chunk_elements // len(gallery))
    for start in range(0, len(queries), rows):
        stop = min(start + rows, len(queries))
        scores = queries[start:stop] @ gallery.T
        right = query_codes[start:stop, None] == gallery_codes[None, :]
        best = np.where(right, scores, -np.inf).max(axis=1)
        above = ((scores >= best[:, None]) & ~right).sum(axis=1)
        ranks[start:stop] = np.where(right.any(axis=1), above, -1)
    return ranks


@torch.inference_mode()
def embed_examples(
    model: torch.nn.Module,
    data: ExampleSet,
    preprocess: Preprocess,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(image vectors, text vectors), L2-normalised float32, for prepared examples."""
    was_training = model.training
    model.eval()
    param_dtype = next(model.parameters()).dtype
    image_chunks, text_chunks = [], []
    try:
        with autocast(device, amp_dtype):
            for start in range(0, len(data.images), batch_size):
                idx = range(start, min(start + batch_size, len(data.images)))
                pixels = batch_pixels(data, idx, preprocess)
                pixels = pixels.to(device, param_dtype, non_blocking=True)
                image_chunks.append(model.encode_image(pixels, normalize=True).float().cpu())
            for start in range(0, len(data.texts), batch_size):
                tokens = data.tokens[start : start + batch_size].to(device, non_blocking=True)
                text_chunks.append(model.encode_text(tokens, normalize=True).float().cpu())
    finally:
        model.train(was_training)

    def stack(chunks: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), dtype=np.float32)

    return stack(image_chunks), stack(text_chunks)


def model_recall(
    model: torch.nn.Module,
    data: ExampleSet,
    preprocess: Preprocess,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int,
    ks: Sequence[int],
) -> dict[str, float]:
    """`recall_at_k` of a bare open_clip model on prepared examples; {} without any."""
    if not data.texts or not data.images:
        return {}
    image_vecs, text_vecs = embed_examples(model, data, preprocess, device, amp_dtype, batch_size)
    return recall_at_k(image_vecs, data.image_product, text_vecs, data.text_product, ks=ks)


def evaluate(
    model: ClipEncoder | torch.nn.Module,
    examples: Iterable[Sequence[Any]],
    *,
    preprocess: Preprocess | None = None,
    tokenizer: Tokenizer | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    ks: Sequence[int] = (1, 5, 10),
    precision: str = "fp32",
) -> dict[str, float]:
    """Recall@K metrics (see `recall_at_k`) of `model` on (product_key, text, image) examples.

    `model` is a `ClipEncoder` (its preprocessing, tokenizer, device and precision are
    used) or an open_clip model, then with `preprocess` (use the eval transform, not the
    training one) and `tokenizer`, on `device` (default: where the model is) with
    autocast `precision` ("fp32": none; "auto", "bf16", "fp16" as in `TrainConfig`).
    Each distinct text and image of a product is encoded once, in batches; it is one
    query and one gallery item. Returns {} without examples.
    """
    if isinstance(model, ClipEncoder):
        encoder = model
        data = collect_examples(examples)
        if not data.texts:
            return {}
        image_vecs = encoder.encode_images([as_pil(im) for im in data.images], batch_size)
        text_vecs = encoder.encode_texts(data.texts, batch_size)
        return recall_at_k(image_vecs, data.image_product, text_vecs, data.text_product, ks=ks)
    if preprocess is None or tokenizer is None:
        raise ValueError("evaluating a bare model needs its preprocess and tokenizer")
    device = torch.device(device) if device else next(model.parameters()).device
    data = prepare_examples(examples, preprocess, tokenizer, cache_images=False)
    amp_dtype = autocast_dtype(device, precision)
    return model_recall(model.to(device), data, preprocess, device, amp_dtype, batch_size, ks)
