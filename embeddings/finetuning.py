"""Fine-tuning CLIP on the catalog: pairs from the database, a new space, safe promotion.

The training itself is Django-free (`embeddings.training`); this module feeds it the
catalog's (caption, image) pairs, stores the result as an `EmbeddingSpace` with a
safetensors checkpoint, and promotes it only when it measurably beats the active space.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import asdict, dataclass, fields

from django.conf import settings
from django.utils import timezone

from catalog.models import Product, ProductImage
from embeddings import training
from embeddings.catalog_pairs import catalog_is_validation, catalog_kind_examples, catalog_pairs
from embeddings.encoder import ClipEncoder, ModelSpec
from embeddings.extensions import (
    catalog_images_by_product,
    extra_pairs_collect,
    gates_summary,
    promotion_gates_run,
)
from embeddings.models import EmbeddingSpace, FinetuneRun
from embeddings.pairfiles import BadLine, PairFileExamples, pair_file_examples
from embeddings.promotion import GateResult, Verdict, promotion_decide
from embeddings.reindex import space_activate_fanout, space_prepare_fanout
from embeddings.signals import candidate_held
from embeddings.spaces import space_active, space_create, space_encoder, space_spec
from embeddings.training import Example, similarity_floors_calibrate

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
    # The toolkits' "text<TAB>base64 image" files (paths the worker can read): a train.tsv
    # to train on as well as the catalog, and a dev.tsv to validate it on (default: a split
    # of the train file). With `no_catalog` only the files are trained on; the catalog's
    # validation split still decides promotion.
    pairs: str | None = None
    val_pairs: str | None = None
    no_catalog: bool = False
    # Leave out the pairs other apps add (embeddings.extensions: the shoppers' queries).
    no_events: bool = False
    # Titles only: no kind captions (training.captions). A very small model trained briefly
    # learns either colour or kind well, and they teach kind (docs/decisions.md).
    no_kind_captions: bool = False
    # Training processes on this machine (torchrun, embeddings.distributed_finetune); None:
    # FINETUNE_NPROC.
    nproc: int | None = None

    @classmethod
    def from_dict(cls, options: dict) -> FinetuneOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise FinetuneError(f"unknown fine-tuning options: {', '.join(unknown)}")
        return cls(**options)

    def as_dict(self) -> dict:
        return asdict(self)


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
                    "complete": event.get("complete", True),
                }
            )
        run.progress = progress
        FinetuneRun.objects.filter(pk=run.pk).update(progress=progress)

    return write


def training_epochs_text(training: Mapping) -> str:
    """The epochs a run trained, counted as its progress counted them ("epoch 8" is the
    eighth, even when the time budget cut it short)."""
    epochs = training.get("epochs", training.get("epochs_completed", "?"))
    text = f"{epochs} epoch{'' if epochs == 1 else 's'}"
    if isinstance(epochs, int) and training.get("epochs_completed", epochs) < epochs:
        text += " (the last cut short by the time budget)"
    return text


def _set_phase(run: FinetuneRun, phase: str, **extra) -> None:
    run.progress = {**run.progress, "phase": phase, **extra}
    FinetuneRun.objects.filter(pk=run.pk).update(progress=run.progress)


def finetune_run_execute(
    *,
    run: FinetuneRun,
    on_progress: Callable[[dict], None] | None = None,
    trainer: Callable[..., training.TrainResult] | None = None,
) -> FinetuneRun:
    """Train, evaluate, store and maybe promote: the whole of one fine-tuning run.

    Errors are recorded on the run (status failed, with the reason) and re-raised; the
    active space changes only through `space_activate`, at the very end. `trainer` is
    `finetune` (the default) or, on rank 0 of a distributed run, its DDP version (same
    arguments).
    """
    FinetuneRun.objects.filter(pk=run.pk).update(status=FinetuneRun.Status.RUNNING)
    run.status = FinetuneRun.Status.RUNNING
    try:
        _execute(run, on_progress, trainer or training.finetune)
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


@dataclass(frozen=True)
class FilePairs:
    """The pair files' examples: what is trained on, what validates it, what was read."""

    train: list[Example]
    val: list[Example]
    left_out_groups: int  # training groups sharing a photo with a validation pair
    left_out_val_groups: int  # validation groups showing a photo the catalog trains on
    catalog_groups: int  # groups keyed as the catalog product whose photo they show
    summary: dict


def file_pairs(
    *,
    options: FinetuneOptions,
    image_size: int,
    catalog_image_product: Mapping[str, int],
    on_bad_line: Callable[[str, BadLine], None],
) -> FilePairs:
    """The training (and validation) examples of `options.pairs` (and `options.val_pairs`).

    A group of the file that shows a photo of a catalog product (the file was imported, or
    exported from this shop) is keyed as that product: it follows the product's split, and
    its pairs merge with the product's instead of repeating them as in-batch negatives of
    themselves. Without a validation file the other groups are split by their key the way
    products are. A training group left with a photo of a validation pair (of the
    validation file, or of a catalog validation product) is left out, so validation and
    the promotion gate never measure what was trained on; nor does a validation group
    showing a photo of a catalog training product.
    """

    def read(path: str) -> PairFileExamples:
        try:
            return pair_file_examples(
                path, image_size=image_size, on_bad_line=lambda bad: on_bad_line(path, bad)
            )
        except OSError as exc:
            raise FinetuneError(f"cannot read the pair file {path}: {exc.strerror}") from exc

    train_file = read(options.pairs)
    product_of: dict[Hashable, int] = {}
    for example, sha in zip(train_file.examples, train_file.image_sha256, strict=True):
        if (pk := catalog_image_product.get(sha)) is not None:
            product_of[example.product_key] = min(product_of.get(example.product_key, pk), pk)
    labelled = [
        (e._replace(product_key=product_of.get(e.product_key, e.product_key)), sha)
        for e, sha in zip(train_file.examples, train_file.image_sha256, strict=True)
    ]
    held_out = {sha for sha, pk in catalog_image_product.items() if catalog_is_validation(pk)}
    summary = {"train": train_file.summary()}
    left_out_val: set[Hashable] = set()
    if options.val_pairs:
        val_file = read(options.val_pairs)
        summary["val"] = val_file.summary()
        held_out |= set(val_file.image_sha256)
        # ...and a validation group showing a photo the catalog trains on is no measure.
        validating = list(zip(val_file.examples, val_file.image_sha256, strict=True))
        left_out_val = {
            e.product_key
            for e, sha in validating
            if (pk := catalog_image_product.get(sha)) is not None and not catalog_is_validation(pk)
        }
        val = [e for e, _ in validating if e.product_key not in left_out_val]
    else:
        in_val = {key: catalog_is_validation(key) for key in {e.product_key for e, _ in labelled}}
        val = [e for e, _ in labelled if in_val[e.product_key]]
        labelled = [(e, sha) for e, sha in labelled if not in_val[e.product_key]]
    leaked = {e.product_key for e, sha in labelled if sha in held_out}
    train = [e for e, _ in labelled if e.product_key not in leaked]
    return FilePairs(
        train=train,
        val=val,
        left_out_groups=len(leaked),
        left_out_val_groups=len(left_out_val),
        catalog_groups=len(set(product_of)),
        summary=summary,
    )


def _execute(
    run: FinetuneRun,
    on_progress: Callable[[dict], None] | None,
    trainer: Callable[..., training.TrainResult],
) -> None:
    options = FinetuneOptions.from_dict(run.options)
    if options.val_pairs and not options.pairs:
        raise FinetuneError("validation pairs (--val-pairs) need training pairs (--pairs)")
    if options.no_catalog and not options.pairs:
        raise FinetuneError("--no-catalog needs pairs to train on (--pairs)")
    active = space_active()
    spec, source = _start_spec(run, options, active)
    device = settings.CLIP_DEVICE or None
    # A model of its own: training changes weights in place, the shared encoder must not.
    model = ClipEncoder(spec, device=device)
    emit = on_progress or (lambda event: None)

    _set_phase(run, "collecting pairs")
    pairs = catalog_pairs(
        image_size=model.image_size, max_products=options.max_products, train=not options.no_catalog
    )
    files = None
    if options.pairs:
        files = file_pairs(
            options=options,
            image_size=model.image_size,
            catalog_image_product=pairs.image_product,
            on_bad_line=lambda path, bad: emit(
                {"event": "bad_line", "file": path, "line": bad.line, "reason": bad.reason}
            ),
        )
    catalog_images = catalog_images_by_product(pairs.train + pairs.val)
    extras = {}
    if not options.no_events:
        _set_phase(run, "collecting shopper pairs")
        extras = extra_pairs_collect(
            catalog_images=catalog_images, options=options.as_dict(), emit=emit
        )
    train = pairs.train + (files.train if files else [])
    train_images = {key: catalog_images[key] for key in {e.product_key for e in pairs.train}}
    kind = [] if options.no_kind_captions else catalog_kind_examples(train_images)
    train += kind
    train += [example for extra in extras.values() for example in extra.train]
    # The catalog's validation split validates and gates, as for any run; the files' only
    # when the catalog has none (then the result cannot be promoted: nothing to compare).
    gate_on_catalog = bool(pairs.val)
    val = pairs.val or (files.val if files else [])
    minimum = settings.FINETUNE_MIN_PAIRS
    if len(train) < minimum or not val:
        from_files = f" and {len(files.train)} from pair files" if files else ""
        raise FinetuneError(
            f"too few pairs to train on: {len(train)} training pairs ({len(pairs.train)} from "
            f"{pairs.train_products} catalog products{from_files}) and {len(val)} validation "
            f"pairs (need at least {minimum} training pairs and one validation product with an "
            "image, or validation pairs)"
        )

    _set_phase(run, "evaluating the active space")
    active_metrics = training.evaluate(space_encoder(active), val)
    file_val = files.val if files and gate_on_catalog else []
    active_file_metrics = training.evaluate(space_encoder(active), file_val) if file_val else {}

    config = training.TrainConfig(
        **{
            k: getattr(options, k)
            for k in ("epochs", "batch_size", "lr", "max_minutes", "seed")
            if getattr(options, k) is not None
        },
        device=str(model.device),
    )
    result = trainer(
        model.model,
        model.preprocess,
        model.tokenizer,
        train,
        val,
        config,
        progress=_progress_writer(run, also=on_progress),
    )

    # Serve in the encoder's own precision again (fp16 on GPU); the checkpoint is fp32.
    model.model = model.model.to(model.dtype).eval()
    calibration = similarity_floors_calibrate(
        encoder=model,
        examples=val,
        catalog_images=ProductImage.objects.filter(product__status=Product.Status.ACTIVE).count(),
    )
    floor = calibration.similarity_floor
    _set_phase(run, "checking the promotion gates")
    verdicts = promotion_gates_run(
        active=active,
        active_encoder=space_encoder(active),
        candidate=model,
        catalog_images=catalog_images,
        extras=extras,
    )

    _set_phase(run, "saving")
    name = options.name or f"{spec.architecture}-ft-{timezone.now():%Y%m%d-%H%M%S}"
    model_dir = settings.MODEL_DIR
    checkpoint = model_dir / f"{name}.safetensors"
    digest = training.save_checkpoint(model.model, checkpoint, metadata={"space": name})
    (model_dir / f"{name}.json").write_text(
        json.dumps(
            {
                "architecture": spec.architecture,
                "model_cfg": training.model_config(spec.architecture),
            },
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
        "validated_on": "catalog" if gate_on_catalog else "pair files",
        "training": {
            "train_pairs": len(train),
            "kind_pairs": len(kind),  # of train_pairs: kind captions (training.captions)
            "val_pairs": len(val),
            "train_products": pairs.train_products,
            "val_products": pairs.val_products,
            "skipped_images": pairs.skipped_images,
            "steps": result.steps,
            "epochs": result.epochs,
            "epochs_completed": result.epochs_completed,
            "stopped_early": result.stopped_early,
            "pairs_per_second": result.pairs_per_second,
            "train_seconds": result.train_seconds,
            "batch_size": result.batch_size,
            "device": result.device,
            "world_size": result.world_size,
            "precision": result.precision,
            "config": result.config,
        },
    }
    if extras:
        metrics["extra_pairs"] = {
            name: {**extra.summary, "train_pairs": len(extra.train)}
            for name, extra in extras.items()
        }
    metrics["gates"] = [verdict.as_dict() for verdict in verdicts]
    if files:
        metrics["pair_files"] = {
            **files.summary,
            "train_pairs": len(files.train),
            "val_pairs": len(files.val),
            "left_out_groups": files.left_out_groups,
            "left_out_val_groups": files.left_out_val_groups,
            "catalog_groups": files.catalog_groups,
        }
        if file_val:
            metrics["pair_files"]["active_before"] = active_file_metrics
            metrics["pair_files"]["after"] = training.evaluate(model, file_val)
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
    # The one promotion decision of spaces and rankers (embeddings.promotion): the catalog
    # recall gate first (required: no validation products, no promotion), then the others.
    # Interleaving (SEARCH_INTERLEAVE_FRACTION > 0): a candidate that passed the offline
    # gates is filled and left for the online test (search.interleaving), which promotes it.
    promotion = promotion_decide(
        offline=[
            GateResult(
                "catalog recall",
                gain >= margin if gate_on_catalog else None,
                f"validation mean recall {gain:+.3f} over {active.name}, margin {margin:.3f}",
                required=True,
            ),
            *(GateResult(v.gate, v.passed, v.detail) for v in verdicts),
        ],
        interleave=settings.SEARCH_INTERLEAVE_FRACTION > 0,
    )
    passed = promotion.verdict != Verdict.REFUSE
    promote = passed and not options.no_promote
    decided_by = promotion.decided_by
    held = promote and promotion.verdict == Verdict.HOLD
    if held:
        promote = False
        decided_by = "every gate passed; held for an interleaving test"
        decision = (
            f"passed the offline gates (validation mean recall {gain:+.3f} over "
            f"{active.name}, margin {margin:.3f}); {candidate_hold(run=run, space=space)}"
        )
    elif promote:
        decided_by = "every gate passed"
        _set_phase(run, "filling and activating")
        space_activate_fanout(space=space)
        decision = (
            f"promoted: validation mean recall {gain:+.3f} over {active.name}, margin {margin:.3f}"
        )
    elif options.no_promote:
        decision = "kept as a candidate: promotion was not asked for"
    elif not gate_on_catalog:
        decision = (
            f"kept as a candidate: validation mean recall on the pair files {gain:+.3f} over "
            f"{active.name}, but the catalog has no validation products to decide promotion on"
        )
    elif gain < margin:
        decision = (
            f"kept as a candidate: validation mean recall {gain:+.3f} over "
            f"{active.name} is below the margin of {margin:.3f}"
        )
    else:
        decision = (
            f"kept as a candidate by the {decided_by} gate: validation mean recall "
            f"{gain:+.3f} over {active.name} passed the margin of {margin:.3f}"
        )
    decided_by = "promotion not asked for" if options.no_promote else decided_by
    decision += gates_summary(verdicts)
    # `passed_offline_gates`: what an interleaving test's auto-promotion requires beside the
    # online win, which whoever clicks can steer (search.interleaving).
    space.metrics = {
        **metrics,
        "decision": decision,
        "decided_by": decided_by,
        "passed_offline_gates": passed,
        "promotion": promotion.as_dict(),
        # The catalog recall gate's own say, for the report (None: no validation products).
        "catalog_gate": {"passed": gain >= margin if gate_on_catalog else None, "margin": margin},
    }
    space.save(update_fields=["metrics"])
    run.result = {
        "space": space.name,
        "promoted": promote,
        "held_for_interleaving": held,
        "decision": decision,
        "gain": gain,
        "margin": margin,
        "decided_by": decided_by,
        "gates": metrics["gates"],
        "active_before": active_metrics,
        "after": result.metrics_after,
    }
    if files:
        run.result["pair_files"] = metrics["pair_files"]
        run.result["bad_lines"] = sum(r["bad_line_count"] for r in files.summary.values())
    run.progress = {**run.progress, "phase": "done"}
    logger.info("fine-tune run %s: %s", run.pk, decision)


def candidate_hold(*, run: FinetuneRun, space: EmbeddingSpace) -> str:
    """Fill and index a candidate without activating it, and ask the search app to test it
    on shoppers (embeddings.signals.candidate_held); what happened, for the decision."""
    _set_phase(run, "filling for an interleaving test")
    space_prepare_fanout(space=space)
    responses = candidate_held.send(sender=EmbeddingSpace, space=space)
    if any(response is True for _, response in responses):
        return "filled and left a candidate: the interleaving test started"
    return (
        "filled and left a candidate; no interleaving test started (another one is running): "
        "start it from the admin's interleaving tests when that one ends"
    )


def space_evaluate(*, space: EmbeddingSpace) -> dict:
    """Recall@1/5/10 both ways of `space` on the catalog's validation split; stored on it."""
    encoder = space_encoder(space)
    pairs = catalog_pairs(image_size=encoder.image_size, train=False)
    if not pairs.val:
        raise FinetuneError("the catalog has no validation products with images to evaluate on")
    metrics = training.evaluate(encoder, pairs.val)
    evaluation = {
        **metrics,
        "val_products": pairs.val_products,
        "val_pairs": len(pairs.val),
        "at": timezone.now().isoformat(),
    }
    space.metrics = {**space.metrics, "evaluation": evaluation}
    space.save(update_fields=["metrics"])
    return evaluation
