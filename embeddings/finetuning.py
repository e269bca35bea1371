"""Fine-tuning CLIP on the catalog: pairs from the database, a new space, safe promotion.

The training itself is Django-free (`embeddings.training`); this module feeds it the
catalog's (caption, image) pairs, stores the result as an `EmbeddingSpace` with a
safetensors checkpoint, and promotes it only when it measurably beats the active space.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from django.conf import settings
from django.utils import timezone

from catalog.images import ImageDecodeError, decode_image
from catalog.models import Product, ProductImage
from embeddings.encoder import ClipEncoder, ModelSpec
from embeddings.models import EmbeddingSpace, FinetuneRun
from embeddings.spaces import space_active, space_create, space_encoder, space_spec
from embeddings.training import (
    Example,
    TrainConfig,
    evaluate,
    finetune,
    model_config,
    save_checkpoint,
    similarity_floors_calibrate,
    split_by_product,
)
from embeddings.vectors import product_captions, space_activate

logger = logging.getLogger(__name__)


class FinetuneError(ValueError):
    """Fine-tuning cannot start or finish; the message says why. The active space is untouched."""


@dataclass(frozen=True)
class FinetuneOptions:
    """What one run trains from and how; stored on the run as JSON. None: the default."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_minutes: float | None = None
    seed: int = 0
    name: str | None = None  # of the new space; default generated from the time
    margin: float | None = None  # required recall gain; default FINETUNE_PROMOTION_MARGIN
    no_promote: bool = False
    pretrained: str | None = None  # start from an open_clip tag instead of a space
    scratch: bool = False  # start from a fixed-seed random init of `architecture`
    architecture: str | None = None
    max_products: int | None = None

    @classmethod
    def from_dict(cls, options: dict) -> FinetuneOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise FinetuneError(f"unknown fine-tuning options: {', '.join(unknown)}")
        return cls(**options)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CatalogPairs:
    train: list[Example]
    val: list[Example]
    train_products: int
    val_products: int
    skipped_images: int


def catalog_pairs(*, image_size: int, max_products: int | None = None) -> CatalogPairs:
    """(product, caption, image) examples from the catalog, split by product.

    Captions are each product's titles in every language (descriptions are longer than
    the text tower's context and mostly repeat the title). Images are decoded once, at
    about the model's input size; a product's undecodable images are left out.
    """
    examples: dict[int, list[Example]] = {}
    skipped = 0
    products = Product.objects.prefetch_related("images").order_by("pk")
    if max_products:
        products = products[:max_products]
    for product in products.iterator(chunk_size=500):
        texts = [c.text for c in product_captions(product) if c.field.startswith("title")]
        pictures = []
        for image in product.images.all():
            try:
                with image.file.open("rb") as f:
                    pictures.append(
                        decode_image(
                            f,
                            max_pixels=settings.MAX_IMAGE_PIXELS,
                            max_aspect_ratio=settings.MAX_IMAGE_ASPECT_RATIO,
                            draft_size=image_size,
                        )
                    )
            except (ImageDecodeError, FileNotFoundError):
                skipped += 1
        if pictures:
            examples[product.pk] = [
                Example(product.pk, text, picture) for text in texts for picture in pictures
            ]
    train_keys, val_keys = split_by_product(
        examples, val_fraction=settings.FINETUNE_VAL_FRACTION, seed=settings.FINETUNE_SPLIT_SEED
    )
    return CatalogPairs(
        train=[e for key in train_keys for e in examples[key]],
        val=[e for key in val_keys for e in examples[key]],
        train_products=len(train_keys),
        val_products=len(val_keys),
        skipped_images=skipped,
    )


def _progress_writer(
    run: FinetuneRun, also: Callable[[dict], None] | None = None
) -> Callable[[dict], None]:
    """Store training progress on the run, at most every two seconds (plus epoch ends)."""
    last_write = 0.0

    def write(event: dict) -> None:
        nonlocal last_write
        if also:
            also(event)
        now = time.monotonic()
        if event.get("event") == "step" and now - last_write < 2:
            return
        last_write = now
        progress = dict(run.progress)
        progress.update(phase="training", **{k: v for k, v in event.items() if k != "event"})
        if event.get("event") == "epoch":
            progress.setdefault("epochs", []).append(
                {
                    "epoch": event.get("epoch"),
                    "train_loss": event.get("train_loss"),
                    "val_mean_recall": (event.get("val") or {}).get("mean_recall"),
                }
            )
        run.progress = progress
        FinetuneRun.objects.filter(pk=run.pk).update(progress=progress)

    return write


def _set_phase(run: FinetuneRun, phase: str, **extra) -> None:
    run.progress = {**run.progress, "phase": phase, **extra}
    FinetuneRun.objects.filter(pk=run.pk).update(progress=run.progress)


def finetune_run_execute(
    *, run: FinetuneRun, on_progress: Callable[[dict], None] | None = None
) -> FinetuneRun:
    """Train, evaluate, store and maybe promote: the whole of one fine-tuning run.

    Errors are recorded on the run (status failed, with the reason) and re-raised; the
    active space changes only through `space_activate`, at the very end.
    """
    FinetuneRun.objects.filter(pk=run.pk).update(status=FinetuneRun.Status.RUNNING)
    run.status = FinetuneRun.Status.RUNNING
    try:
        _execute(run, on_progress)
    except BaseException as exc:
        run.status, run.error = FinetuneRun.Status.FAILED, str(exc) or type(exc).__name__
        run.save(update_fields=["status", "error", "updated"])
        raise
    run.status = FinetuneRun.Status.SUCCEEDED
    run.save(update_fields=["status", "result", "space", "progress", "updated"])
    return run


def _start_spec(
    run: FinetuneRun, options: FinetuneOptions, active: EmbeddingSpace
) -> tuple[ModelSpec, EmbeddingSpace]:
    architecture = options.architecture or active.architecture
    if options.pretrained:
        return ModelSpec(architecture, pretrained=options.pretrained), active
    if options.scratch:
        return ModelSpec(architecture, seed=options.seed), active
    source = run.source or active
    return space_spec(source), source


def _execute(run: FinetuneRun, on_progress: Callable[[dict], None] | None) -> None:
    options = FinetuneOptions.from_dict(run.options)
    active = space_active()
    spec, source = _start_spec(run, options, active)
    device = settings.CLIP_DEVICE or None
    # A model of its own: training changes weights in place, the shared encoder must not.
    model = ClipEncoder(spec, device=device)

    _set_phase(run, "collecting pairs")
    pairs = catalog_pairs(image_size=model.image_size, max_products=options.max_products)
    minimum = settings.FINETUNE_MIN_PAIRS
    if len(pairs.train) < minimum or not pairs.val:
        raise FinetuneError(
            f"too few pairs to train on: {len(pairs.train)} training pairs from "
            f"{pairs.train_products} products and {pairs.val_products} validation products "
            f"(need at least {minimum} training pairs and one validation product with an image)"
        )

    _set_phase(run, "evaluating the active space")
    active_metrics = evaluate(space_encoder(active), pairs.val)

    config = TrainConfig(
        **{
            k: getattr(options, k)
            for k in ("epochs", "batch_size", "lr", "max_minutes", "seed")
            if getattr(options, k) is not None
        },
        device=str(model.device),
    )
    result = finetune(
        model.model,
        model.preprocess,
        model.tokenizer,
        pairs.train,
        pairs.val,
        config,
        progress=_progress_writer(run, also=on_progress),
    )

    # Serve in the encoder's own precision again (fp16 on GPU); the checkpoint is fp32.
    model.model = model.model.to(model.dtype).eval()
    calibration = similarity_floors_calibrate(
        encoder=model, examples=pairs.val, catalog_images=ProductImage.objects.count()
    )
    floor = calibration.similarity_floor

    _set_phase(run, "saving")
    name = options.name or f"{spec.architecture}-ft-{timezone.now():%Y%m%d-%H%M%S}"
    model_dir = settings.MODEL_DIR
    checkpoint = model_dir / f"{name}.safetensors"
    digest = save_checkpoint(model.model, checkpoint, metadata={"space": name})
    (model_dir / f"{name}.json").write_text(
        json.dumps(
            {"architecture": spec.architecture, "model_cfg": model_config(spec.architecture)},
            indent=2,
        )
    )
    metrics = {
        "similarity_floor": floor,
        "unknown_words_floor": calibration.unknown_words_floor,
        "calibration": calibration.report,
        "before": result.metrics_before,
        "after": result.metrics_after,
        "active_before": active_metrics,
        "active_space": active.name,
        "epochs": [
            {
                "epoch": e.epoch,
                "train_loss": e.train_loss,
                "val_mean_recall": e.val.get("mean_recall"),
            }
            for e in result.history
        ],
        # Enough points for a loss curve, not every step of a long run.
        "losses": result.losses[:: max(1, len(result.losses) // 300)],
        "training": {
            "train_pairs": len(pairs.train),
            "val_pairs": len(pairs.val),
            "train_products": pairs.train_products,
            "val_products": pairs.val_products,
            "skipped_images": pairs.skipped_images,
            "steps": result.steps,
            "epochs_completed": result.epochs_completed,
            "stopped_early": result.stopped_early,
            "pairs_per_second": result.pairs_per_second,
            "train_seconds": result.train_seconds,
            "batch_size": result.batch_size,
            "device": result.device,
            "precision": result.precision,
            "config": result.config,
        },
    }
    space = space_create(
        name=name,
        spec=ModelSpec(spec.architecture, checkpoint=str(checkpoint), checkpoint_sha256=digest),
        parent=source,
        build_indexes=False,  # built after the fill, faster than growing it row by row
        metrics=metrics,
    )
    EmbeddingSpace.objects.filter(pk=space.pk).update(
        similarity_floor=floor, unknown_words_floor=calibration.unknown_words_floor
    )
    run.space = space

    margin = settings.FINETUNE_PROMOTION_MARGIN if options.margin is None else options.margin
    gain = result.metrics_after.get("mean_recall", 0.0) - active_metrics.get("mean_recall", 0.0)
    promote = gain >= margin and not options.no_promote
    if promote:
        _set_phase(run, "filling and activating")
        space_activate(space=space)
        decision = (
            f"promoted: validation mean recall {gain:+.3f} over {active.name}, margin {margin:.3f}"
        )
    elif options.no_promote:
        decision = "kept as a candidate: promotion was not asked for"
    else:
        decision = (
            f"kept as a candidate: validation mean recall {gain:+.3f} over "
            f"{active.name} is below the margin of {margin:.3f}"
        )
    space.metrics = {**metrics, "decision": decision}
    space.save(update_fields=["metrics"])
    run.result = {
        "space": space.name,
        "promoted": promote,
        "decision": decision,
        "gain": gain,
        "margin": margin,
        "active_before": active_metrics,
        "after": result.metrics_after,
    }
    run.progress = {**run.progress, "phase": "done"}
    logger.info("fine-tune run %s: %s", run.pk, decision)


def space_evaluate(*, space: EmbeddingSpace) -> dict:
    """Recall@1/5/10 both ways of `space` on the catalog's validation split; stored on it."""
    encoder = space_encoder(space)
    pairs = catalog_pairs(image_size=encoder.image_size)
    if not pairs.val:
        raise FinetuneError("the catalog has no validation products with images to evaluate on")
    metrics = evaluate(encoder, pairs.val)
    evaluation = {
        **metrics,
        "val_products": pairs.val_products,
        "val_pairs": len(pairs.val),
        "at": timezone.now().isoformat(),
    }
    space.metrics = {**space.metrics, "evaluation": evaluation}
    space.save(update_fields=["metrics"])
    return evaluation
