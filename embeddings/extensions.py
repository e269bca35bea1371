"""What other apps add to fine-tuning without embeddings knowing them: extra training pairs
and promotion gates.

Embeddings never imports search (the layers), yet fine-tuning trains on what shoppers
typed and chose, and a candidate must not lose on the shop's real queries. So search
registers a *pair source* and a *promotion gate* here from `SearchConfig.ready()`, the way
catalog reaches embeddings through its signal. Fine-tuning calls every registered source
(unless the run says `no_events`) and, after training, every gate; a gate that fails keeps
the candidate out, and the decision names it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from embeddings.encoder import ClipEncoder
from embeddings.models import EmbeddingSpace
from embeddings.training import Example


@dataclass(frozen=True)
class ExtraPairs:
    """Training pairs one source adds, what to report about them, and what its gate needs."""

    source: str
    train: list[Example]
    summary: dict = field(default_factory=dict)  # JSON: stored on the run and the space
    state: Any = None  # handed to the gates (e.g. the held-out queries); not stored


@dataclass(frozen=True)
class GateVerdict:
    """One gate's say on a candidate: passed True/False, or None when it had nothing to
    measure (then it does not block). `before`/`after` are the active's and the candidate's
    figures, `detail` one readable sentence."""

    gate: str
    passed: bool | None
    detail: str
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "gate": self.gate,
            "passed": self.passed,
            "detail": self.detail,
            "before": self.before,
            "after": self.after,
        }


class PairSource(Protocol):
    def __call__(
        self, *, catalog_images: dict[Hashable, list[Image.Image]], options: dict
    ) -> ExtraPairs | None: ...


class PromotionGate(Protocol):
    def __call__(
        self,
        *,
        active: EmbeddingSpace,
        active_encoder: ClipEncoder,
        candidate: ClipEncoder,
        catalog_images: dict[Hashable, list[Image.Image]],
        extras: dict[str, ExtraPairs],
    ) -> GateVerdict | None: ...


_pair_sources: dict[str, PairSource] = {}
_promotion_gates: dict[str, PromotionGate] = {}


def pair_source_register(name: str, source: PairSource) -> None:
    """Add (or replace, by name: `ready()` may run twice) a source of training pairs."""
    _pair_sources[name] = source


def promotion_gate_register(name: str, gate: PromotionGate) -> None:
    _promotion_gates[name] = gate


def catalog_images_by_product(examples: Sequence[Example]) -> dict[Hashable, list[Image.Image]]:
    """The decoded images of each product among the catalog's examples, each image once
    (the same objects: nothing decoded again)."""
    images: dict[Hashable, dict[int, Image.Image]] = {}
    for example in examples:
        images.setdefault(example.product_key, {}).setdefault(id(example.image), example.image)
    return {key: list(by_id.values()) for key, by_id in images.items()}


def extra_pairs_collect(
    *,
    catalog_images: dict[Hashable, list[Image.Image]],
    options: dict,
    emit: Callable[[dict], None] = lambda event: None,
) -> dict[str, ExtraPairs]:
    """Every registered source's pairs, by source name (sources with none left out)."""
    extras = {}
    for name, source in _pair_sources.items():
        extra = source(catalog_images=catalog_images, options=options)
        if extra is not None and (extra.train or extra.state is not None):
            extras[name] = extra
            emit({"event": "extra_pairs", "source": name, "pairs": len(extra.train)})
    return extras


def promotion_gates_run(
    *,
    active: EmbeddingSpace,
    active_encoder: ClipEncoder,
    candidate: ClipEncoder,
    catalog_images: dict[Hashable, list[Image.Image]],
    extras: dict[str, ExtraPairs],
) -> list[GateVerdict]:
    verdicts = []
    for gate in _promotion_gates.values():
        verdict = gate(
            active=active,
            active_encoder=active_encoder,
            candidate=candidate,
            catalog_images=catalog_images,
            extras=extras,
        )
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts


def gates_summary(verdicts: Sequence[GateVerdict]) -> str:
    """The registered gates' say, as a sentence to follow the recall gate's."""
    said = {True: "passed", False: "failed", None: "had nothing to measure"}
    return "".join(f"; {v.gate} gate {said[v.passed]}: {v.detail}" for v in verdicts)
