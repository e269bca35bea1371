"""The learning-rate schedule and the wall-clock budget it can be fitted to."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warmup from ~0 to `base_lr`, then cosine decay to `min_lr` at `total_steps`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def fit_steps(
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


class TimeBudget:
    """The clock of one training run and the LR schedule's horizon under it.

    `deadline` is None without a budget. The horizon, `total_steps`, starts at the planned
    steps (`plan`); with `fit`, `refit` moves it to what the time left affords at the
    recent pace (see `fit_steps`), counting validations when `validating`.
    """

    def __init__(self, max_minutes: float | None, *, fit: bool = True, validating: bool = True):
        self.started = time.monotonic()
        self.deadline = self.started + max_minutes * 60 if max_minutes else None
        self.fit, self.validating = fit, validating
        self.planned_steps = self.total_steps = 0
        self.steps_per_epoch = 1
        self.recent: deque[float] = deque(maxlen=50)  # seconds per step
        self.train_seconds = 0.0  # time spent in training steps
        self.val_seconds = 0.0  # duration of the latest validation
        self.expired = False  # a step ended past the deadline
        self._done = 0.0  # the largest fraction_done said so far
        self._step_started = self._step_ended = self.started

    def plan(self, steps_per_epoch: int, epochs: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.planned_steps = self.total_steps = steps_per_epoch * epochs

    def fraction_done(self, step: int) -> float:
        """How much of the run is behind, 0 to 1, for a progress bar whose total is fixed:
        the steps done of the horizon or, under a budget, the time used of it when that is
        further. The horizon moves with the pace, so the answer never goes back."""
        done = step / self.total_steps if self.total_steps else 0.0
        if self.deadline is not None:
            done = max(done, self.elapsed() / (self.deadline - self.started))
        self._done = max(self._done, min(1.0, done))
        return self._done

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @contextmanager
    def validation(self) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.val_seconds = time.monotonic() - t0

    def step_started(self) -> None:
        self._step_started = time.monotonic()

    def step_ended(self) -> float:
        """Record a step's duration and whether it ended past the deadline; return the
        seconds since the start."""
        now = self._step_ended = time.monotonic()
        self.train_seconds += now - self._step_started
        self.recent.append(now - self._step_started)
        self.expired = self.deadline is not None and now >= self.deadline
        return now - self.started

    def refit(self, step: int) -> None:
        """The horizon after `step` steps, once the pace is known (5 steps)."""
        if self.fit and self.deadline is not None and len(self.recent) >= 5:
            self.total_steps = fit_steps(
                self.planned_steps, step, self.deadline - self._step_ended, self.recent,
                self.steps_per_epoch, val_seconds=self.val_seconds if self.validating else 0.0,
            )  # fmt: skip
