"""Contrastive fine-tuning and retrieval evaluation for open_clip models, Django-free.

Like open_clip_train, but small: one process, one device, a catalogue-sized dataset.
One module per concern:

* `split`: `Example` and `split_by_product` (`is_validation_key` for one key), so no
  product is in train and validation.
* `data`: examples reduced to distinct texts and images per product, word dropout, the
  batches of an epoch (no product twice in a batch) and their tensors.
* `metrics`: `recall_at_k` / `evaluate`, text-to-image and image-to-text Recall@K, where
  the right answers for a query are everything belonging to the same product.
* `precision`: the autocast dtype that pays on a device, and the GradScaler it needs.
* `schedule`: linear warmup + cosine decay, fitted to a wall-clock budget.
* `loop`: `finetune`, the symmetric InfoNCE loss (open_clip's `ClipLoss`) with AdamW.
* `captions`: kind captions, a product's category names as texts of its own.
* `checkpoint`: `save_checkpoint` writes safetensors that `load_checkpoint` reads back.
* `floors`: the similarity floors of a trained model, for queries of catalog words and
  for queries of none (calibrated on random letter strings).

A training example is `(product_key, text, image)`: the image a PIL image (or encoded
image bytes). Every distinct text of a product is one training pair per epoch, paired
with one of the product's images drawn at random that epoch.
"""

import importlib

# Each name's module, imported on first use (PEP 562): `split`, `schedule` and `floors` need
# no torch, and a process that only splits or calibrates (the web server, `migrate`) never
# pays the seconds of importing it.
_MODULES = {
    "load_checkpoint": "checkpoint",
    "model_config": "checkpoint",
    "save_checkpoint": "checkpoint",
    "kind_captions": "captions",
    "kind_examples": "captions",
    "epoch_batches": "data",
    "FloorCalibration": "floors",
    "gibberish_queries": "floors",
    "shopper_queries": "floors",
    "similarity_floors_calibrate": "floors",
    "EpochStats": "loop",
    "TrainConfig": "loop",
    "TrainResult": "loop",
    "finetune": "loop",
    "param_groups": "loop",
    "evaluate": "metrics",
    "recall_at_k": "metrics",
    "lr_at": "schedule",
    "Example": "split",
    "WeightedExample": "split",
    "is_validation_key": "split",
    "split_by_product": "split",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
