"""The training loop: symmetric InfoNCE (open_clip's `ClipLoss`), AdamW, linear warmup +
cosine decay, mixed precision where it pays, and a wall-clock budget."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import open_clip
import torch

from embeddings.encoder import default_device

from .data import (
    ExampleSet,
    Preprocess,
    Tokenizer,
    batch_tensors,
    epoch_pairs,
    epoch_text_batches,
    prepare_examples,
)
from .distributed import (
    BatchShard,
    World,
    contrastive_loss,
    ddp_wrap,
    step_sync,
)
from .metrics import model_recall
from .precision import PRECISION_NAMES, autocast, autocast_dtype, grad_scaler
from .schedule import TimeBudget, lr_at

ProgressCallback = Callable[[dict[str, Any]], None]


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
    # dress") land near long titles ("plain red linen dress"). Chinese titles are cut into
    # words by jieba first ("红色条纹棉质T恤" can become "红色T恤"); without
    # `word_dropout_segment_chinese` only spaces split words, and they stay whole.
    word_dropout: float = 0.5
    word_dropout_segment_chinese: bool = True
    val_every_epoch: bool = True
    eval_before: bool = True  # validation metrics of the untrained model, in the result
    eval_batch_size: int = 256
    log_every_steps: int = 10  # how often `progress` hears about steps
    ks: tuple[int, ...] = (1, 5, 10)

    def resolved_batch_size(self, device: torch.device) -> int:
        if self.batch_size:
            return self.batch_size
        return self.cuda_batch_size if device.type == "cuda" else self.cpu_batch_size

    def resolved_warmup_steps(self, total_steps: int) -> int:
        warmup = self.warmup_steps
        if warmup is None:
            warmup = round(self.warmup_fraction * total_steps)
        return max(1, min(warmup, total_steps))


@dataclass
class EpochStats:
    epoch: int  # 1-based
    steps: int  # optimizer steps so far, all epochs
    train_loss: float  # mean loss over the epoch's steps
    lr: float  # at the epoch's last step
    logit_scale: float  # exp(logit_scale), the inverse temperature
    elapsed: float  # seconds since the start of `finetune`
    val: dict[str, float] = field(default_factory=dict)
    complete: bool = True  # False: the time budget or the horizon ended it early


@dataclass
class TrainResult:
    history: list[EpochStats]
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    steps: int
    epochs: int  # epochs trained in, the last one possibly cut short (see history)
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
    world_size: int = 1  # processes that trained (torch.distributed), 1 without

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


def train_step(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    tokens: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: torch.nn.Module,
    amp_dtype: torch.dtype | None,
    lr: float,
    config: TrainConfig,
) -> float:
    """One optimizer step at `lr` on a batch; returns its loss. `scaler` is a disabled
    GradScaler (plain backward and step) except for fp16; see `precision.grad_scaler`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(pixels.device, amp_dtype):
        out = model(pixels, tokens)
        if isinstance(out, dict):  # models built with output_dict=True
            out = (out["image_features"], out["text_features"], out["logit_scale"])
        image_features, text_features, logit_scale = out[:3]
        loss = loss_fn(image_features.float(), text_features.float(), logit_scale.float())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if config.grad_clip_norm:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():  # the bare model's parameter, under DDP too
        getattr(model, "module", model).logit_scale.clamp_(0, math.log(config.max_logit_scale))
    return float(loss.detach())


@dataclass
class _Run:
    """One `finetune` call: what its steps use, set up once, and what they have done."""

    model: torch.nn.Module
    data: ExampleSet
    preprocess: Preprocess
    tokenizer: Tokenizer
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: torch.nn.Module
    amp_dtype: torch.dtype | None
    device: torch.device
    config: TrainConfig
    rng: np.random.Generator
    clock: TimeBudget
    warmup: int
    emit: ProgressCallback
    # Under torch.distributed: the model in DDP that steps train, and this rank's share of
    # each batch; None in one process.
    world: World | None = None
    ddp_model: torch.nn.Module | None = None
    shard: BatchShard | None = None
    step: int = 0
    pairs_seen: int = 0
    lr: float = 0.0  # at the latest step
    losses: list[float] = field(default_factory=list)


def train_one_epoch(run: _Run, epoch: int, batches: list[np.ndarray]) -> list[float]:
    """Train on an epoch's batches until the schedule's horizon or the deadline; return the
    losses of the steps taken."""
    config, clock = run.config, run.clock
    pairs = epoch_pairs(run.data, run.rng, config.hflip)
    losses: list[float] = []
    for batch in batches:
        if run.step >= clock.total_steps:
            break
        clock.step_started()
        lr = lr_at(run.step, clock.total_steps, run.warmup, config.lr, config.min_lr)
        positions = run.shard(batch) if run.shard else None
        pixels, tokens = batch_tensors(
            run.data, batch, pairs, run.preprocess, run.tokenizer, config.word_dropout, run.rng,
            run.device, segment_chinese=config.word_dropout_segment_chinese, positions=positions,
        )  # fmt: skip
        loss = train_step(
            run.ddp_model or run.model, pixels, tokens, run.optimizer, run.scaler, run.loss_fn,
            run.amp_dtype, lr, config,
        )  # fmt: skip
        elapsed = clock.step_ended()
        trained = len(batch)
        if run.world:  # every rank takes rank 0's horizon and deadline, and the mean loss
            clock.refit(run.step + 1)
            loss = step_sync(run.world, loss, clock)
            trained = len(positions) * run.world.world_size
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {run.step}; lower the lr")
        losses.append(loss)
        run.step, run.pairs_seen, run.lr = run.step + 1, run.pairs_seen + trained, lr
        if run.step % max(1, config.log_every_steps) == 0 or run.step == clock.total_steps:
            run.emit({
                "event": "step", "step": run.step, "total_steps": clock.total_steps,
                "epoch": epoch, "loss": loss, "lr": lr, "logit_scale": _scale(run.model),
                "elapsed": elapsed, "fraction": clock.fraction_done(run.step),
            })  # fmt: skip
        if clock.expired:
            break
        if not run.world:  # under DDP, refitted on rank 0 before the ranks agreed on it
            clock.refit(run.step)
    run.losses += losses
    return losses


def finetune(
    model: torch.nn.Module,
    preprocess_train: Preprocess,
    tokenizer: Tokenizer,
    train_examples: Iterable[Sequence[Any]],
    val_examples: Iterable[Sequence[Any]] = (),
    config: TrainConfig | None = None,
    progress: ProgressCallback | None = None,
    *,
    preprocess_val: Preprocess | None = None,
    world: World | None = None,
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

    With `world` (see `distributed.world_init`), this is one rank of a DDP run: every rank
    calls `finetune` with the same model, examples and config and trains on its share of
    each batch on `world.device`; only rank 0 validates (pass the validation examples
    there) and its result has the metrics, the others' are empty.
    """
    config = config or TrainConfig()
    clock = TimeBudget(
        config.max_minutes, fit=config.fit_schedule_to_budget, validating=config.val_every_epoch
    )
    device = torch.device(config.device) if config.device else default_device()
    if world:
        device = world.device
    amp_dtype = autocast_dtype(device, config.precision)
    preprocess_val = preprocess_val or preprocess_train
    emit = progress or (lambda event: None)

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = model.float().to(device)
    train = prepare_examples(train_examples, preprocess_train, tokenizer, config.cache_images)
    val = prepare_examples(val_examples, preprocess_val, tokenizer, config.cache_images)
    if not train.texts:
        raise ValueError("no training examples")
    train, val = train.to(device), val.to(device)

    def validate() -> dict[str, float]:
        if world and not world.is_main:
            return {}
        with clock.validation():
            batch, ks = config.eval_batch_size, config.ks
            return model_recall(model, val, preprocess_val, device, amp_dtype, batch, ks)

    metrics_before = validate() if config.eval_before else {}
    if config.init_temperature:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1.0 / config.init_temperature))
    batch_size = min(config.resolved_batch_size(device), len(train.texts))
    steps_per_epoch = len(epoch_text_batches(train, batch_size, np.random.default_rng(0)))
    clock.plan(steps_per_epoch, config.epochs)
    groups = param_groups(model, config.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
    loss_fn = contrastive_loss(world) if world else open_clip.ClipLoss()
    run = _Run(
        model, train, preprocess_train, tokenizer, optimizer, grad_scaler(device, amp_dtype),
        loss_fn, amp_dtype, device, config, rng, clock,
        warmup=config.resolved_warmup_steps(clock.planned_steps), emit=emit, lr=config.lr,
        world=world, ddp_model=ddp_wrap(model, world) if world else None,
        shard=BatchShard(world) if world else None,
    )  # fmt: skip
    emit({
        "event": "start", "total_steps": clock.total_steps, "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size, "train_pairs": len(train.texts), "val_texts": len(val.texts),
        "device": str(device), "precision": PRECISION_NAMES[amp_dtype],
        "metrics_before": metrics_before, "elapsed": clock.elapsed(), "fraction": 0.0,
        "world_size": world.world_size if world else 1,
    })  # fmt: skip

    history: list[EpochStats] = []
    epochs_completed = 0
    model.train()
    for epoch in range(1, config.epochs + 1):
        batches = epoch_text_batches(train, batch_size, rng)
        if losses := train_one_epoch(run, epoch, batches):
            complete = len(losses) == len(batches)
            epochs_completed = epoch if complete else epochs_completed
            val_metrics = validate() if config.val_every_epoch else {}
            history.append(EpochStats(
                epoch, run.step, float(np.mean(losses)), run.lr, _scale(model), clock.elapsed(),
                val_metrics, complete,
            ))  # fmt: skip
            emit({"event": "epoch", **asdict(history[-1])})
        if clock.expired or run.step >= clock.total_steps:
            break

    last = history[-1] if history else None
    metrics_after = last.val if last and last.val and last.steps == run.step else validate()
    stopped_early = clock.expired or run.step < clock.planned_steps
    model.eval()
    result = TrainResult(
        history=history, metrics_before=metrics_before, metrics_after=metrics_after,
        steps=run.step, epochs=len(history), epochs_completed=epochs_completed,
        stopped_early=stopped_early,
        pairs_seen=run.pairs_seen, train_seconds=clock.train_seconds,
        pairs_per_second=run.pairs_seen / clock.train_seconds if clock.train_seconds else 0.0,
        elapsed_seconds=clock.elapsed(), losses=run.losses, batch_size=batch_size,
        device=str(device), precision=PRECISION_NAMES[amp_dtype], config=asdict(config),
        world_size=world.world_size if world else 1,
    )  # fmt: skip
    emit({
        "event": "end", "steps": run.step, "stopped_early": stopped_early, "fraction": 1.0,
        "metrics_after": metrics_after, "pairs_per_second": result.pairs_per_second,
        "elapsed": result.elapsed_seconds,
    })  # fmt: skip
    return result


def _scale(model: torch.nn.Module) -> float:
    return float(model.logit_scale.detach().exp())
