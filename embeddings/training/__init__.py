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
* `checkpoint`: `save_checkpoint` writes safetensors that `load_checkpoint` reads back.
* `floors`: the similarity floors of a trained model, for queries of catalog words and
  for queries of none (calibrated on random letter strings).

A training example is `(product_key, text, image)`: the image a PIL image (or encoded
image bytes). Every distinct text of a product is one training pair per epoch, paired
with one of the product's images drawn at random that epoch.
"""

from .checkpoint import load_checkpoint, model_config, save_checkpoint
from .data import epoch_batches
from .floors import (
    FloorCalibration,
    gibberish_queries,
    shopper_queries,
    similarity_floors_calibrate,
)
from .loop import EpochStats, TrainConfig, TrainResult, finetune, param_groups
from .metrics import evaluate, recall_at_k
from .schedule import lr_at
from .split import Example, WeightedExample, is_validation_key, split_by_product

__all__ = [
    "EpochStats",
    "Example",
    "FloorCalibration",
    "gibberish_queries",
    "shopper_queries",
    "similarity_floors_calibrate",
    "TrainConfig",
    "TrainResult",
    "WeightedExample",
    "epoch_batches",
    "evaluate",
    "finetune",
    "is_validation_key",
    "load_checkpoint",
    "lr_at",
    "model_config",
    "param_groups",
    "recall_at_k",
    "save_checkpoint",
    "split_by_product",
]
