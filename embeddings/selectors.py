"""Reads of the embeddings app for other apps' pages: whether photo features can answer yet."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from embeddings.models import EmbeddingSpace, FinetuneRun
from embeddings.spaces import space_active_or_none

# Read by every shop page: a few seconds old is fine, a query per page view is not.
MODEL_WARMUP_CACHE_KEY = "embeddings:model-warmup"
MODEL_WARMUP_CACHE_SECONDS = 5
# Phases of a run (embeddings.finetuning) after training, before the switch.
_FINISHING_PHASES = {
    "checking the promotion gates",
    "saving",
    "filling and activating",
}


@dataclass(frozen=True)
class ModelWarmup:
    """Photo features wait: the active space is a random init, not a trained model."""

    state: str  # "starting", "training", "finishing", "failed" or "waiting"
    percent: int | None = None  # of the training, while it trains

    @property
    def message(self) -> str:
        if self.state == "training":
            return (
                "Photo search is warming up: the shop's model is training "
                f"({self.percent}%). Words match already."
            )
        if self.state == "starting":
            return (
                "Photo search is warming up: the shop's model starts training. Words match already."
            )
        if self.state == "finishing":
            return (
                "Photo search is almost ready: the shop's model is trained and its photos "
                "are being indexed. Words match already."
            )
        if self.state == "failed":
            return (
                "Photo search waits for the shop's model: its training failed (see Fine-tune "
                "runs in the admin). Words match."
            )
        return (
            "Photo search waits for the shop's model, which has not been trained yet. Words match."
        )

    @property
    def photo_message(self) -> str:
        """What a photo feature says instead of results that would mean nothing."""
        return f"Search by photo and similar products wait for the shop's model. {self.message}"


def model_warmup() -> ModelWarmup | None:
    """Why photo features wait, or None when they answer (a trained or pretrained space is
    active, or PHOTO_FEATURES_NEED_TRAINED_MODEL is off). Cached a few seconds."""
    if not settings.PHOTO_FEATURES_NEED_TRAINED_MODEL:
        return None
    found = cache.get(MODEL_WARMUP_CACHE_KEY)
    if found is None:
        warmup = _model_warmup()
        found = {"warmup": warmup}
        cache.set(MODEL_WARMUP_CACHE_KEY, found, MODEL_WARMUP_CACHE_SECONDS)
    return found["warmup"]


def _model_warmup() -> ModelWarmup | None:
    active = space_active_or_none()
    if active is None or active.source != EmbeddingSpace.Source.RANDOM:
        return None  # no space at all is another page's error (search says so)
    run = FinetuneRun.objects.order_by("-created").only("status", "progress").first()
    if run is None or run.status == FinetuneRun.Status.SUCCEEDED:
        return ModelWarmup("waiting")  # never trained, or trained and left a candidate
    if run.status == FinetuneRun.Status.FAILED:
        return ModelWarmup("failed")
    phase, fraction = run.progress.get("phase", ""), run.progress.get("fraction", 0.0)
    if phase == "training" and fraction < 1:
        return ModelWarmup("training", percent=int(100 * fraction))
    if phase in _FINISHING_PHASES or phase == "training":
        return ModelWarmup("finishing")
    return ModelWarmup("starting")
