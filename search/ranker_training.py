"""Training a learned ranker: LightGBM's LambdaMART (`lambdarank`) on what shoppers chose.

- Examples: the products shown for each judged query (search.judgments: position-debiased
  click-model grades, 0-3), with the features logged when they were shown
  (SearchLog.features). The searches are those the judgments count (text, without shopper
  filters, robots left out), and a product's features are the mean over *clients* of each
  client's mean: one client repeating a search weighs as one shopper, as in the judgments.
  A judged query set (search.judged, `judged_set`) adds its grades to the queries it names.
- Split by query, never by row: the queries fine-tuning holds out (`query_is_held_out`) are
  never trained on; those of them with judgments from SEARCH_GATE_MIN_CLIENTS clients or
  more (`gate_queries`) are what the gate measures.
- The gate: held-out nDCG@10 of the candidate must beat the live ranker's (fusion's, when
  none is live) by SEARCH_RANKER_MARGIN, each replayed as it serves (search.ranker: only
  relevant rows move, into the places relevant rows held). Then the shared decision
  (embeddings.promotion): live at once, held for an interleaving test against the live
  one (SEARCH_INTERLEAVE_FRACTION > 0), or refused.
- The model is stored in LightGBM's own text format (Ranker.model_text).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.utils import timezone

from embeddings.promotion import GateResult, Verdict, promotion_decide
from search.engagement import counted_searches_fetch
from search.evaluation import ranking_quality
from search.features import FEATURES
from search.interleaving import ranker_interleaving_start
from search.judged import JudgedQuery, product_grades
from search.judgments import (
    gate_queries,
    judged_queries,
    judgments_compute,
    judgments_since,
    query_is_held_out,
)
from search.models import Ranker
from search.ranker import LoadedRanker, ranker_activate, ranker_load

logger = logging.getLogger(__name__)

GATE = "held-out nDCG@10"
# Small trees, many of them, slowly: shops' logs are small and noisy.
PARAMS = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [10],
    "num_leaves": 15,
    "min_data_in_leaf": 10,
    "learning_rate": 0.05,
    "feature_fraction": 0.9,
    "lambdarank_truncation_level": 20,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "seed": 0,
    "verbosity": -1,
}
ROUNDS = 150
FUSED = FEATURES.index("fused")
RELEVANT = FEATURES.index("relevant")


class RankerTrainingError(ValueError):
    """Nothing to train on (too few judged queries with logged features)."""


@dataclass
class QueryGroup:
    """One query's examples: products shown, their features and their grades."""

    query: str
    products: np.ndarray  # int64
    features: np.ndarray  # float32, products x FEATURES
    grades: np.ndarray  # int, 0-3
    held_out: bool  # never trained on
    gated: bool = False  # measured by the gate (held out, enough clients)


@dataclass
class RankerData:
    groups: list[QueryGroup] = field(default_factory=list)

    @property
    def train(self) -> list[QueryGroup]:
        return [g for g in self.groups if not g.held_out]

    @property
    def gate(self) -> list[QueryGroup]:
        return [g for g in self.groups if g.gated]


def logged_features(queries: Sequence[str], *, since) -> dict[tuple[str, int], np.ndarray]:
    """(query, product) -> its features, the mean over clients of each client's mean, from
    the searches the judgments count (search.judgments.counted_searches_fetch)."""
    width = len(FEATURES)
    # Per (query, product), per client: the sum of its values and how many were not NaN.
    sums: dict[tuple[str, int], dict[str, list]] = defaultdict(dict)
    rows = counted_searches_fetch(
        """SELECT s.query, s.client, s.product_ids, l.features
        FROM searches s JOIN search_searchlog l ON l.id = s.id
        WHERE cardinality(l.features) > 0""",
        since=since,
        more="AND s.query = ANY(%(queries)s)",
        queries=list(queries),
    )
    for query, client, product_ids, features in rows:
        matrix = np.asarray(features, np.float64).reshape(-1, width)
        for product, row in zip(product_ids, matrix, strict=False):
            if np.isnan(row[FUSED]):  # not in the ranked window (a related product)
                continue
            entry = sums[query, product].setdefault(client, [np.zeros(width), np.zeros(width)])
            entry[0] += np.nan_to_num(row, nan=0.0)
            entry[1] += ~np.isnan(row)
    out = {}
    # A value missing for every client stays missing (NaN), quietly.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key, by_client in sums.items():
            means = np.vstack([total / counted for total, counted in by_client.values()])
            out[key] = means[0] if len(means) == 1 else np.nanmean(means, axis=0)
    return out


def ranker_data(*, judged_set: Sequence[JudgedQuery] = ()) -> RankerData:
    """The examples, grouped by query, split by query (module docstring)."""
    since = judgments_since()
    judged = judged_queries(judgments_compute(since=since))
    gated = set(gate_queries(judged))
    from_set = {j.query.lower(): j for j in judged_set}
    features = logged_features(sorted(judged.keys() | from_set.keys()), since=since)
    by_query: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for (query, product), values in features.items():
        by_query[query][product] = values
    data = RankerData()
    with np.errstate(all="ignore"):
        for query in sorted(by_query):
            products = sorted(by_query[query])
            logged = judged[query].products if query in judged else {}
            grades = {pid: judgment.grade for pid, judgment in logged.items()}
            if query in from_set:  # the set's grades where it has some, the log's otherwise
                grades |= {
                    pid: g
                    for pid, g in product_grades(from_set[query], products).items()
                    if g or pid not in grades
                }
            labels = np.array([grades.get(pid, 0) for pid in products], np.int32)
            if not labels.any():
                continue
            data.groups.append(
                QueryGroup(
                    query=query,
                    products=np.asarray(products, np.int64),
                    features=np.vstack([by_query[query][pid] for pid in products]).astype(
                        np.float32
                    ),
                    grades=labels,
                    held_out=query_is_held_out(query),
                    gated=query in gated,
                )
            )
    return data


def booster_train(groups: Sequence[QueryGroup]):
    import lightgbm

    dataset = lightgbm.Dataset(
        np.vstack([g.features for g in groups]),
        label=np.concatenate([g.grades for g in groups]),
        group=[len(g.products) for g in groups],
        feature_name=list(FEATURES),
        params={"min_data_in_bin": 1, "verbosity": -1},
        free_raw_data=False,
    )
    return lightgbm.train(PARAMS, dataset, num_boost_round=ROUNDS)


# --- replaying the served order --------------------------------------------------------------


def served_order(group: QueryGroup, scores: np.ndarray | None) -> np.ndarray:
    """Indexes of the group's products in the order a search shows them: fusion's (by the
    fused score, ties to the lower id), then, with `scores`, the relevant ones re-ranked
    among their own places (search.ranker.ranker_rerank)."""
    fused = np.nan_to_num(group.features[:, FUSED], nan=0.0)
    order = np.lexsort((group.products, -fused))
    if scores is None:
        return order
    relevant = group.features[order, RELEVANT] > 0.5
    places = np.flatnonzero(relevant)
    moving = order[places]
    ranked = moving[np.lexsort((np.arange(len(moving)), -scores[moving]))]
    order = order.copy()
    order[places] = ranked
    return order


def group_ndcg(group: QueryGroup, order: np.ndarray) -> float:
    """nDCG@10 of the group's products in `order` (search.evaluation's gains and ties)."""
    position = np.empty(len(order))
    position[order] = np.arange(len(order), 0, -1)  # the first shown scores highest
    ((ndcg, _),) = ranking_quality(
        products=group.products,
        scores=position[None, :],
        grades=[dict(zip(group.products.tolist(), group.grades.tolist(), strict=True))],
    )
    return ndcg


def held_out_ndcg(groups: Sequence[QueryGroup], ranker) -> list[float]:
    """Per group, nDCG@10 as served by `ranker` (None: fusion alone; else a LoadedRanker or
    a lightgbm.Booster)."""
    result = []
    for group in groups:
        scores = None
        if ranker is not None:
            booster = ranker.booster if isinstance(ranker, LoadedRanker) else ranker
            scores = np.asarray(booster.predict(group.features, num_threads=1))
        result.append(group_ndcg(group, served_order(group, scores)))
    return result


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


# --- the service ------------------------------------------------------------------------------


def ranker_train(
    *, name: str = "", judged_set: Sequence[JudgedQuery] = (), promote: bool = True
) -> Ranker:
    """Train a candidate on the log, measure it on the held-out queries against the live
    ranker (or fusion), store it, and decide (embeddings.promotion): live, held for an
    interleaving test, or refused. `promote=False`: stored and measured, never promoted."""
    data = ranker_data(judged_set=judged_set)
    train = data.train
    if len(train) < settings.SEARCH_RANKER_MIN_QUERIES:
        raise RankerTrainingError(
            f"{len(train)} judged queries with logged features to train on, "
            f"SEARCH_RANKER_MIN_QUERIES is {settings.SEARCH_RANKER_MIN_QUERIES}: let shoppers "
            "search for longer"
        )
    booster = booster_train(train)
    live_row = Ranker.objects.filter(status=Ranker.Status.ACTIVE).first()
    live = None
    if live_row is not None:
        try:
            live = ranker_load(live_row)
        except ValueError:
            logger.warning("the live ranker %s does not load: measured against fusion", live_row)
    gate = data.gate
    fusion, candidate = held_out_ndcg(gate, None), held_out_ndcg(gate, booster)
    live_scores = held_out_ndcg(gate, live) if live is not None else None
    baseline_name = live_row.name if live is not None else "fusion"
    baseline = _mean(live_scores if live_scores is not None else fusion)
    margin = settings.SEARCH_RANKER_MARGIN
    now = _mean(candidate)
    passed = None if not gate else now >= baseline + margin - 1e-9
    detail = (
        f"{now:.3f} on {len(gate)} held-out queries against {baseline_name}'s {baseline:.3f} "
        f"(needs +{margin:.3f})"
        if gate
        else "no held-out queries with judgments from enough clients"
    )
    promotion = promotion_decide(
        offline=[GateResult(GATE, passed, detail, required=True)],
        interleave=settings.SEARCH_INTERLEAVE_FRACTION > 0,
    )
    importance = booster.feature_importance("gain")
    metrics = {
        "trained_queries": len(train),
        "trained_examples": int(sum(len(g.products) for g in train)),
        "held_out_queries": len(gate),
        "rounds": ROUNDS,
        "ndcg@10": {
            "fusion": _mean(fusion),
            "live": _mean(live_scores) if live_scores is not None else None,
            "candidate": now,
            "baseline": baseline_name,
        },
        "per_query": [
            {
                "query": g.query,
                "fusion": f,
                "candidate": c,
                **({"live": live_scores[i]} if live_scores is not None else {}),
            }
            for i, (g, f, c) in enumerate(zip(gate, fusion, candidate, strict=True))
        ],
        "importance": {
            feature: float(value) for feature, value in zip(FEATURES, importance, strict=True)
        },
        "margin": margin,
        "gates": [{"gate": GATE, "passed": passed, "detail": detail}],
        "passed_offline_gates": promotion.verdict != Verdict.REFUSE,
        "promotion": promotion.as_dict(),
    }
    ranker = Ranker.objects.create(
        name=name or f"ranker-{timezone.now():%Y%m%d-%H%M%S}",
        model_text=booster.model_to_string(),
        features=list(FEATURES),
        metrics=metrics,
        parent=live_row,
    )
    if not promote:
        decision = "kept as a candidate: promotion was not asked for"
    elif promotion.verdict == Verdict.PROMOTE:
        ranker_activate(ranker=ranker)
        decision = f"live: {promotion.reason}"
    elif promotion.verdict == Verdict.HOLD:
        decision = f"held: {promotion.reason}; {ranker_interleaving_start(ranker=ranker)}"
    else:
        decision = f"refused: {promotion.reason}"
    Ranker.objects.filter(pk=ranker.pk).update(metrics={**metrics, "decision": decision})
    ranker.refresh_from_db()
    logger.info("ranker %s: %s", ranker, decision)
    return ranker
