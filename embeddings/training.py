"""Contrastive fine-tuning and retrieval evaluation for open_clip models, Django-free.

Like open_clip_train, but small: one process, one device, a catalogue-sized dataset.

* `split_by_product` splits examples by product, so no product is in train and validation.
* `recall_at_k` / `evaluate` measure text-to-image and image-to-text Recall@K, where the
  right answers for a query are everything belonging to the same product.
* `finetune` trains with the symmetric InfoNCE loss (open_clip's `ClipLoss`), AdamW,
  linear warmup + cosine decay, mixed precision where it pays, and a wall-clock budget.
* `save_checkpoint` writes safetensors that `encoder.load_state_dict` reads back.

A training example is `(product_key, text, image)`: the image a PIL image (or encoded
image bytes). Every distinct text of a product is one training pair per epoch, paired
with one of the product's images drawn at random that epoch.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import open_clip
import torch
from PIL import Image

from .encoder import ClipEncoder, decode_image, file_sha256

ProgressCallback = Callable[[dict[str, Any]], None]


class Example(NamedTuple):
    """One (product, text, image) training or validation example."""

    product_key: Hashable
    text: str
    image: Image.Image | bytes


# ---------------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------------


def split_by_product(
    product_keys: Iterable[Hashable], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Hashable], list[Hashable]]:
    """Split distinct product keys into (train_keys, val_keys), deterministically.

    Each key goes to validation when a hash of (seed, key) falls below `val_fraction`, so
    the assignment of a product never depends on which other products exist (adding
    products to a catalogue does not reshuffle the old ones) nor on the process
    (`hash()` is salted per process; sha256 is not). Keys keep their first-seen order and
    duplicates are dropped, so no key is in both lists.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be within [0, 1], got {val_fraction}")
    train: list[Hashable] = []
    val: list[Hashable] = []
    seen: set[Hashable] = set()
    for key in product_keys:
        if key in seen:
            continue
        seen.add(key)
        digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
        (val if u < val_fraction else train).append(key)
    return train, val


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Examples -> distinct texts and images
# ---------------------------------------------------------------------------------------------


def _image_digest(image: Image.Image | bytes) -> bytes:
    if isinstance(image, bytes | bytearray):
        return hashlib.blake2b(bytes(image), digest_size=16).digest()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.digest()


def _as_pil(image: Image.Image | bytes) -> Image.Image:
    return decode_image(bytes(image)) if isinstance(image, bytes | bytearray) else image


@dataclass
class _Dataset:
    """Examples reduced to distinct (product, text) and (product, image) entries.

    `image_pixels` holds every image preprocessed once (float16, CPU) when caching; else
    `images` keeps the source images and they are preprocessed whenever used.
    """

    products: list[Hashable]
    texts: list[str]
    text_product: np.ndarray  # product index per distinct text
    images: list[Image.Image | bytes]
    image_product: np.ndarray  # product index per distinct image
    product_images: list[np.ndarray] = field(default_factory=list)
    tokens: torch.Tensor | None = None
    image_pixels: torch.Tensor | None = None


def _collect(examples: Iterable[Sequence[Any]]) -> _Dataset:
    product_index: dict[Hashable, int] = {}
    text_index: dict[tuple[int, str], int] = {}
    image_index: dict[tuple[int, bytes], int] = {}
    texts: list[str] = []
    text_product: list[int] = []
    images: list[Image.Image | bytes] = []
    image_product: list[int] = []
    # id(image) -> (image, digest): an object shared by several examples is hashed once;
    # holding the image keeps its id from being reused by another object meanwhile.
    digests: dict[int, tuple[Any, bytes]] = {}
    for product_key, text, image in examples:
        p = product_index.setdefault(product_key, len(product_index))
        if (p, text) not in text_index:
            text_index[(p, text)] = len(texts)
            texts.append(text)
            text_product.append(p)
        seen = digests.get(id(image))
        digest = seen[1] if seen else _image_digest(image)
        digests[id(image)] = (image, digest)
        if (p, digest) not in image_index:
            image_index[(p, digest)] = len(images)
            images.append(image)
            image_product.append(p)
    data = _Dataset(
        products=list(product_index),
        texts=texts,
        text_product=np.asarray(text_product, dtype=np.int64),
        images=images,
        image_product=np.asarray(image_product, dtype=np.int64),
    )
    by_product: list[list[int]] = [[] for _ in data.products]
    for i, p in enumerate(image_product):
        by_product[p].append(i)
    data.product_images = [np.asarray(ix, dtype=np.int64) for ix in by_product]
    return data


def _prepare(
    examples: Iterable[Sequence[Any]],
    preprocess: Callable[[Image.Image], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    cache_images: bool,
) -> _Dataset:
    data = _collect(examples)
    data.tokens = tokenizer(data.texts) if data.texts else None
    if cache_images and data.images:
        first = preprocess(_as_pil(data.images[0]))
        pixels = torch.empty((len(data.images), *first.shape), dtype=torch.float16)
        pixels[0] = first
        for i in range(1, len(data.images)):
            pixels[i] = preprocess(_as_pil(data.images[i]))
        data.image_pixels = pixels
    return data


def _pixels(
    data: _Dataset, indices: Sequence[int], preprocess: Callable[[Image.Image], torch.Tensor]
) -> torch.Tensor:
    if data.image_pixels is not None:
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return data.image_pixels[index.to(data.image_pixels.device)].float()
    return torch.stack([preprocess(_as_pil(data.images[i])) for i in indices])


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def _cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX tiles (Xeon Sapphire Rapids and later): bf16 matmuls run
    ~1.6x faster there; elsewhere CPU bf16 is emulated and slower than fp32."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except Exception:  # private API: absent or failing on some builds
        return False


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.inference_mode()
def _embed(
    model: torch.nn.Module,
    data: _Dataset,
    preprocess: Callable[[Image.Image], torch.Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(image vectors, text vectors), L2-normalised float32, for a prepared dataset."""
    was_training = model.training
    model.eval()
    param_dtype = next(model.parameters()).dtype
    image_chunks, text_chunks = [], []
    try:
        with _autocast(device, amp_dtype):
            for start in range(0, len(data.images), batch_size):
                idx = range(start, min(start + batch_size, len(data.images)))
                pixels = _pixels(data, idx, preprocess).to(device, param_dtype, non_blocking=True)
                image_chunks.append(model.encode_image(pixels, normalize=True).float().cpu())
            for start in range(0, len(data.texts), batch_size):
                tokens = data.tokens[start : start + batch_size].to(device, non_blocking=True)
                text_chunks.append(model.encode_text(tokens, normalize=True).float().cpu())
    finally:
        model.train(was_training)

    def stack(chunks: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), dtype=np.float32)

    return stack(image_chunks), stack(text_chunks)


def _metrics(
    model: torch.nn.Module,
    data: _Dataset,
    preprocess: Callable[[Image.Image], torch.Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int,
    ks: Sequence[int],
) -> dict[str, float]:
    if not data.texts or not data.images:
        return {}
    image_vecs, text_vecs = _embed(model, data, preprocess, device, amp_dtype, batch_size)
    return recall_at_k(image_vecs, data.image_product, text_vecs, data.text_product, ks=ks)


def evaluate(
    model: ClipEncoder | torch.nn.Module,
    examples: Iterable[Sequence[Any]],
    *,
    preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
    tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
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
        data = _collect(examples)
        if not data.texts:
            return {}
        image_vecs = encoder.encode_images([_as_pil(im) for im in data.images], batch_size)
        text_vecs = encoder.encode_texts(data.texts, batch_size)
        return recall_at_k(image_vecs, data.image_product, text_vecs, data.text_product, ks=ks)
    if preprocess is None or tokenizer is None:
        raise ValueError("evaluating a bare model needs its preprocess and tokenizer")
    device = torch.device(device) if device else next(model.parameters()).device
    data = _prepare(examples, preprocess, tokenizer, cache_images=False)
    amp_dtype = _autocast_dtype(device, precision)
    return _metrics(model.to(device), data, preprocess, device, amp_dtype, batch_size, ks)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Hyper-parameters for `finetune`.

    The defaults train a small CLIP from scratch on a catalogue of a few thousand
    products, tuned on the 2,000-product demo catalogue (64 px images, English and
    Chinese titles): ~115k pairs, about 8-9 minutes on two CPU cores with bf16 (AMX)
    or about 10 in fp32, half a minute on one H100. Fine-tuning pretrained weights
    wants a lower `lr` (1e-5 to 5e-5) and fewer epochs.
    """

    epochs: int = 32
    # Pairs per step; None: `cpu_batch_size` on CPU, `cuda_batch_size` on CUDA. Capped
    # at the number of training pairs. Bigger batches hold more hard negatives (same
    # colour, other category...), which is what teaches the finer attributes.
    batch_size: int | None = None
    cpu_batch_size: int = 256
    cuda_batch_size: int = 256
    lr: float = 2e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 0.0  # where the cosine decay ends
    weight_decay: float = 0.1  # AdamW, on matrices only (not biases, norms, logit_scale)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_fraction: float = 0.05  # of all steps; `warmup_steps` overrides when set
    warmup_steps: int | None = None
    grad_clip_norm: float | None = 1.0
    # Initial softmax temperature (logit_scale = log(1 / t)); None keeps the model's own.
    init_temperature: float | None = None
    max_logit_scale: float = 100.0  # logit_scale is clamped to [0, ln(100)] like open_clip
    # Wall-clock budget for the whole call (setup and validation included), checked
    # after every step; None: no limit. With `fit_schedule_to_budget` the LR schedule's
    # horizon also follows the measured pace, so a slow machine runs fewer steps that
    # still end with a fully decayed LR instead of being cut off at full LR.
    max_minutes: float | None = None
    fit_schedule_to_budget: bool = True
    seed: int = 0
    device: str | None = None  # None: CUDA when available, else CPU
    # Autocast: "auto" is bf16 on CUDA (fp16 + GradScaler where bf16 is missing) and on
    # CPUs with AMX, else fp32; weights and optimizer state stay fp32 in every case.
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    cache_images: bool = True  # preprocess each image once and keep it (float16)
    hflip: bool = True  # random horizontal flips of cached images, per pair
    # Probability that a training text is cut to a random subset of its words (each kept
    # with probability 1/2, order kept, at least one), so that short queries ("red
    # dress") land near long titles ("plain red linen dress"). Texts without spaces
    # (Chinese titles) are left whole.
    word_dropout: float = 0.5
    val_every_epoch: bool = True
    eval_before: bool = True  # validation metrics of the untrained model, in the result
    eval_batch_size: int = 256
    log_every_steps: int = 10  # how often `progress` hears about steps
    ks: tuple[int, ...] = (1, 5, 10)

    def resolved_batch_size(self, device: torch.device) -> int:
        if self.batch_size:
            return self.batch_size
        return self.cuda_batch_size if device.type == "cuda" else self.cpu_batch_size


@dataclass
class EpochStats:
    epoch: int  # 1-based
    steps: int  # optimizer steps so far, all epochs
    train_loss: float  # mean loss over the epoch's steps
    lr: float  # at the epoch's last step
    logit_scale: float  # exp(logit_scale), the inverse temperature
    elapsed: float  # seconds since the start of `finetune`
    val: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    history: list[EpochStats]
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    steps: int
    epochs_completed: int
    stopped_early: bool  # the time budget ended the run before `epochs` were done
    pairs_seen: int
    pairs_per_second: float  # training throughput, excluding evaluation and setup
    train_seconds: float  # time spent in training steps
    elapsed_seconds: float  # whole call, setup and evaluation included
    losses: list[float]  # every step's loss, for a loss curve
    batch_size: int
    device: str
    precision: str
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups the usual CLIP way: no weight decay on biases, norm gains, 1-d
    parameters (logit_scale, class embedding...) and position embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = (
            p.ndim < 2
            or "bias" in name
            or ".ln" in name
            or name.startswith("ln")
            or "logit_scale" in name
            or "positional_embedding" in name
        )
        (no_decay if exclude else decay).append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warmup from ~0 to `base_lr`, then cosine decay to `min_lr` at `total_steps`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def epoch_batches(
    text_product: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of batches of text indices, shuffled, with no product twice in a batch
    where possible (two texts of one product in a batch are false negatives for InfoNCE).

    Texts are dealt in rounds (every product's first text, then every product's second
    text...), each round shuffled, and a text that would repeat a product in the batch
    being filled waits for the next one. Only when nothing else is left does a batch take
    a repeat. A final batch under half the batch size is merged away (dropped) when there
    are other batches; its texts come up again in other epochs.
    """
    n = len(text_product)
    if n == 0:
        return []
    batch_size = max(1, min(batch_size, n))
    order = rng.permutation(n)
    # Rank of each text among its product's texts, in shuffled order -> dealing round.
    round_of = np.empty(n, dtype=np.int64)
    counts: dict[int, int] = {}
    for i in order:
        p = int(text_product[i])
        round_of[i] = counts.get(p, 0)
        counts[p] = round_of[i] + 1
    order = order[np.argsort(round_of[order], kind="stable")]

    pending = deque(int(i) for i in order)
    batches: list[np.ndarray] = []
    while pending:
        batch: list[int] = []
        seen: set[int] = set()
        deferred: list[int] = []
        while pending and len(batch) < batch_size:
            i = pending.popleft()
            p = int(text_product[i])
            if p in seen:
                deferred.append(i)
            else:
                batch.append(i)
                seen.add(p)
        while deferred and len(batch) < batch_size:  # nothing else left: allow repeats
            batch.append(deferred.pop(0))
        pending.extendleft(reversed(deferred))
        batches.append(np.asarray(batch, dtype=np.int64))
    if len(batches) > 1 and len(batches[-1]) < batch_size / 2:
        batches.pop()
    return batches


def _drop_words(text: str, probability: float, rng: np.random.Generator) -> str:
    """With `probability`, `text` cut to a random non-empty subset of its words."""
    words = text.split()
    if len(words) < 2 or rng.random() >= probability:
        return text
    keep = rng.random(len(words)) < 0.5
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return " ".join(w for w, k in zip(words, keep, strict=True) if k)


def finetune(
    model: torch.nn.Module,
    preprocess_train: Callable[[Image.Image], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    train_examples: Iterable[Sequence[Any]],
    val_examples: Iterable[Sequence[Any]] = (),
    config: TrainConfig | None = None,
    progress: ProgressCallback | None = None,
    *,
    preprocess_val: Callable[[Image.Image], torch.Tensor] | None = None,
) -> TrainResult:
    """Train an open_clip CLIP model in place with the symmetric contrastive loss.

    `model` is trained in place, moved to the config's device and to fp32 (pass a fresh
    model, not a `ClipEncoder`'s shared one). Examples are (product_key, text, image).
    With `config.cache_images` (default) every image goes through `preprocess_train`
    once and the tensors are reused each epoch (with random horizontal flips if
    `config.hflip`); turn it off for random augmentations in `preprocess_train` that
    should differ per epoch. Validation uses `preprocess_val` (default:
    `preprocess_train`; pass the model's eval transform when the training one is random).

    `progress`, when given, receives dicts: {"event": "start", ...} once, {"event": "step",
    "step", "total_steps", "epoch", "loss", "lr", "logit_scale", "elapsed"} every
    `log_every_steps` steps, {"event": "epoch", ..., "train_loss", "val": metrics} at
    each epoch end and {"event": "end", ...} last.
    """
    config = config or TrainConfig()
    started = time.monotonic()
    deadline = started + config.max_minutes * 60 if config.max_minutes else None
    device = torch.device(config.device) if config.device else _default_device()
    amp_dtype = _autocast_dtype(device, config.precision)
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]
    preprocess_val = preprocess_val or preprocess_train
    emit = progress or (lambda event: None)

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = model.float().to(device)

    train = _prepare(train_examples, preprocess_train, tokenizer, config.cache_images)
    val = _prepare(val_examples, preprocess_val, tokenizer, config.cache_images)
    if not train.texts:
        raise ValueError("no training examples")
    if device.type != "cpu":  # a few MB per thousand images: keep them next to the model
        for data in (train, val):
            data.tokens = data.tokens.to(device) if data.tokens is not None else None
            if data.image_pixels is not None:
                data.image_pixels = data.image_pixels.to(device)

    val_seconds = 0.0  # duration of the latest validation, for the time budget

    def validate() -> dict[str, float]:
        nonlocal val_seconds
        t0 = time.monotonic()
        metrics = _metrics(
            model, val, preprocess_val, device, amp_dtype, config.eval_batch_size, config.ks
        )
        val_seconds = time.monotonic() - t0
        return metrics

    metrics_before = validate() if config.eval_before else {}

    if config.init_temperature:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1.0 / config.init_temperature))
    batch_size = min(config.resolved_batch_size(device), len(train.texts))
    steps_per_epoch = len(epoch_batches(train.text_product, batch_size, np.random.default_rng(0)))
    total_steps = planned_steps = steps_per_epoch * config.epochs
    warmup = config.warmup_steps
    if warmup is None:
        warmup = round(config.warmup_fraction * total_steps)
    warmup = max(1, min(warmup, total_steps))

    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, eps=config.eps
    )
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    loss_fn = open_clip.ClipLoss()
    max_log_scale = math.log(config.max_logit_scale)

    emit({
        "event": "start", "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size, "train_pairs": len(train.texts), "val_texts": len(val.texts),
        "device": str(device), "precision": precision, "metrics_before": metrics_before,
        "elapsed": time.monotonic() - started,
    })  # fmt: skip

    history: list[EpochStats] = []
    losses: list[float] = []
    step = pairs_seen = 0
    train_seconds = 0.0
    stopped_early = False
    epochs_completed = 0
    lr = config.lr
    recent: deque[float] = deque(maxlen=50)  # seconds per step, for the budget

    model.train()
    for epoch in range(1, config.epochs + 1):
        batches = epoch_batches(train.text_product, batch_size, rng)
        # Pair each text with one of its product's images, drawn anew every epoch.
        image_choice = np.array(
            [rng.choice(train.product_images[p]) for p in train.text_product], dtype=np.int64
        )
        flips = rng.random(len(train.texts)) < 0.5 if config.hflip else None
        epoch_losses: list[float] = []
        for batch in batches:
            if step >= total_steps:
                break
            t0 = time.monotonic()
            lr = lr_at(step, total_steps, warmup, config.lr, config.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr

            pixels = _pixels(train, image_choice[batch], preprocess_train)
            if flips is not None and flips[batch].any():
                flip = torch.as_tensor(flips[batch]).to(pixels.device)
                pixels[flip] = pixels[flip].flip(-1)
            pixels = pixels.to(device, non_blocking=True)
            if config.word_dropout > 0:
                texts = [_drop_words(train.texts[i], config.word_dropout, rng) for i in batch]
                tokens = tokenizer(texts).to(device, non_blocking=True)
            else:
                tokens = train.tokens[torch.as_tensor(batch).to(train.tokens.device)]

            with _autocast(device, amp_dtype):
                out = model(pixels, tokens)
                if isinstance(out, dict):  # models built with output_dict=True
                    out = (out["image_features"], out["text_features"], out["logit_scale"])
                image_features, text_features, logit_scale = out[:3]
                loss = loss_fn(image_features.float(), text_features.float(), logit_scale.float())
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if config.grad_clip_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if config.grad_clip_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
                optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_log_scale)

            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step}; lower the lr")
            losses.append(loss_value)
            epoch_losses.append(loss_value)
            step += 1
            pairs_seen += len(batch)
            now = time.monotonic()
            train_seconds += now - t0
            recent.append(now - t0)

            if step % max(1, config.log_every_steps) == 0 or step == total_steps:
                emit({
                    "event": "step", "step": step, "total_steps": total_steps, "epoch": epoch,
                    "loss": loss_value, "lr": lr, "logit_scale": _scale(model),
                    "elapsed": now - started,
                })  # fmt: skip
            if deadline is not None:
                if now >= deadline:
                    stopped_early = True
                    break
                if config.fit_schedule_to_budget and len(recent) >= 5:
                    total_steps = _fit_steps(
                        planned_steps, step, deadline - now, recent, steps_per_epoch,
                        val_seconds=val_seconds if config.val_every_epoch else 0.0,
                    )  # fmt: skip
        if epoch_losses:
            epochs_completed = epoch if len(epoch_losses) == len(batches) else epochs_completed
            val_metrics = validate() if config.val_every_epoch else {}
            stats = EpochStats(
                epoch=epoch,
                steps=step,
                train_loss=float(np.mean(epoch_losses)),
                lr=lr,
                logit_scale=_scale(model),
                elapsed=time.monotonic() - started,
                val=val_metrics,
            )
            history.append(stats)
            emit({"event": "epoch", **asdict(stats)})
        if stopped_early or step >= total_steps:
            break
    stopped_early = stopped_early or step < planned_steps

    if history and history[-1].val and history[-1].steps == step:
        metrics_after = history[-1].val
    else:
        metrics_after = validate()
    model.eval()
    result = TrainResult(
        history=history,
        metrics_before=metrics_before,
        metrics_after=metrics_after,
        steps=step,
        epochs_completed=epochs_completed,
        stopped_early=stopped_early,
        pairs_seen=pairs_seen,
        pairs_per_second=pairs_seen / train_seconds if train_seconds else 0.0,
        train_seconds=train_seconds,
        elapsed_seconds=time.monotonic() - started,
        losses=losses,
        batch_size=batch_size,
        device=str(device),
        precision=precision,
        config=asdict(config),
    )
    emit({
        "event": "end", "steps": step, "stopped_early": stopped_early,
        "metrics_after": metrics_after, "pairs_per_second": result.pairs_per_second,
        "elapsed": result.elapsed_seconds,
    })  # fmt: skip
    return result


def _scale(model: torch.nn.Module) -> float:
    return float(model.logit_scale.detach().exp())


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _fit_steps(
    planned_steps: int,
    step: int,
    seconds_left: float,
    recent: Sequence[float],
    steps_per_epoch: int,
    val_seconds: float,
) -> int:
    """The LR schedule's horizon under a time budget: the planned steps, or fewer when
    they would not fit in the time left at the recent pace (median seconds per step,
    plus a validation per epoch and a last one). Re-estimated after every step, so it
    follows the machine's speed both ways, but never beyond the plan."""
    per_step = float(np.median(recent))
    if per_step <= 0:
        return planned_steps
    per_step += val_seconds / max(1, steps_per_epoch)
    usable = 0.97 * seconds_left - val_seconds
    affordable = int(max(0.0, usable) / per_step)
    return min(planned_steps, step + max(1, affordable))


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def save_checkpoint(
    model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> str:
    """Write the model's weights as fp32 safetensors (atomically), return the file's sha256.

    `encoder.load_state_dict` reads it back; `ModelSpec(checkpoint=..., checkpoint_sha256=...)`
    loads it into a `ClipEncoder`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        name: (t.detach().float() if t.is_floating_point() else t.detach()).cpu().contiguous()
        for name, t in model.state_dict().items()
    }
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_sha256(path)


def model_config(architecture: str) -> dict[str, Any]:
    """open_clip's config dict for a registered architecture (e.g. "shop-tiny"), a copy,
    for saving next to a checkpoint."""
    config = open_clip.get_model_config(architecture)
    if config is None:
        raise ValueError(f"unknown open_clip architecture {architecture!r}")
    return copy.deepcopy(config)
