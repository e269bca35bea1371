"""What fine-tuning learns from shoppers, and the gate that protects them.

Connected to embeddings in `SearchConfig.ready()` through `embeddings.extensions`:

* `shopper_pairs`, a pair source: (query text, engaged product's photo) pairs from the
  judgments (search.judgments), each weighted by the engagement behind it (purchase 3, add
  to cart 2, click 1, reformulation 0.5: expected times per epoch). Whole queries are held
  out for validation (`query_is_held_out`), and pairs of the catalog's validation products
  are left out, so neither gate measures what was trained on.
* `query_ndcg_gate`, a promotion gate: nDCG@10 of the held-out queries, the active space
  against the candidate, both ranking the training catalog's photos (the active space by
  its stored vectors when it has them all, the candidate encoding them now); the candidate
  must not fall below (by more than SEARCH_JUDGMENT_NDCG_TOLERANCE).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

import numpy as np
from django.conf import settings
from PIL import Image

from embeddings.catalog_pairs import catalog_is_validation
from embeddings.encoder import ClipEncoder
from embeddings.extensions import ExtraPairs, GateVerdict
from embeddings.models import EmbeddingSpace
from embeddings.training import WeightedExample
from search.engagement import judgments_discarded
from search.evaluation import (
    encoder_image_vectors,
    queries_own_words,
    query_scores,
    scores_summary,
    space_image_vectors,
)
from search.judgments import (
    QueryJudgments,
    gate_queries,
    judged_queries,
    judgments_compute,
    judgments_since,
    query_is_held_out,
)

SOURCE = "shopper queries"
GATE = "query nDCG"


def held_out_judgments() -> dict[str, QueryJudgments]:
    return gate_queries(judged_queries(judgments_compute()))


def shopper_pairs(
    *, catalog_images: dict[Hashable, list[Image.Image]], options: dict
) -> ExtraPairs | None:
    judged = judged_queries(judgments_compute())
    if not judged:
        return None
    train: list[WeightedExample] = []
    trained_queries, products = set(), set()
    held_out = gate_queries(judged)
    for query, judgments in judged.items():
        if query_is_held_out(query):
            continue
        for pid, judgment in judgments.products.items():
            if judgment.grade < 1 or catalog_is_validation(pid) or pid not in catalog_images:
                continue
            trained_queries.add(query)
            products.add(pid)
            train += [
                WeightedExample(pid, query, image, judgment.weight) for image in catalog_images[pid]
            ]
    summary = {
        "queries": len(judged),
        "trained_queries": len(trained_queries),
        "held_out_queries": len(held_out),
        "products": len(products),
        "held_out_queries_below_clients": sum(map(query_is_held_out, judged)) - len(held_out),
        "discarded": judgments_discarded(since=judgments_since()),
    }
    return ExtraPairs(SOURCE, train, summary, state=held_out)


def query_ndcg_gate(
    *,
    active: EmbeddingSpace,
    active_encoder: ClipEncoder,
    candidate: ClipEncoder,
    catalog_images: dict[Hashable, list[Image.Image]],
    extras: dict[str, ExtraPairs],
) -> GateVerdict | None:
    extra = extras.get(SOURCE)
    held_out = extra.state if extra is not None else held_out_judgments()
    if not held_out:
        if extra is None:
            return None  # no judgments at all: nothing to say
        return GateVerdict(GATE, None, "no held-out queries with judgments")
    judged = {q: j.grades() for q, j in held_out.items()}
    own = queries_own_words(list(judged))
    summaries = []
    for encoder, vectors, owners in (
        (active_encoder, *_active_catalog_vectors(active, active_encoder, catalog_images)),
        (candidate, *encoder_image_vectors(candidate, catalog_images)),  # it has none stored
    ):
        scores = query_scores(
            encoder=encoder, image_vecs=vectors, image_product=owners, judged=judged, own_words=own
        )
        summaries.append(scores_summary(scores))
    before, after = summaries
    was, now = before["all"]["ndcg@10"], after["all"]["ndcg@10"]
    tolerance = settings.SEARCH_JUDGMENT_NDCG_TOLERANCE
    passed = now >= was - tolerance - 1e-9
    detail = (
        f"nDCG@10 of {before['all']['queries']} held-out queries {was:.3f} ({active.name}) -> "
        f"{now:.3f} (candidate)" + ("" if passed else f", a fall beyond {tolerance:.3f}")
    )
    return GateVerdict(GATE, passed, detail, before=before, after=after)


def _active_catalog_vectors(
    active: EmbeddingSpace, encoder: ClipEncoder, catalog_images: dict[Hashable, list]
) -> tuple[np.ndarray, np.ndarray]:
    """The active space's stored vectors of the training catalog's photos: no encoding pass
    when the space holds a vector for every one of them (as after its fill). Else, as for
    the candidate, the photos encoded now, so that both rank the same photos."""
    vectors, owners = space_image_vectors(active)
    wanted = np.isin(owners, np.fromiter(catalog_images, np.int64, len(catalog_images)))
    stored = Counter(owners[wanted].tolist())
    if stored == {pk: len(images) for pk, images in catalog_images.items() if images}:
        return vectors[wanted], owners[wanted]
    return encoder_image_vectors(encoder, catalog_images)
