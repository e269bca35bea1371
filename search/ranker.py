"""Serving the learned ranker: the live one, loaded once per process, re-ranks the first
SEARCH_RANKER_WINDOW rows of a text search after fusion and before the rules.

- Only the relevant rows of the window move, among the places relevant rows held: related
  rows stay where they were, and a search with an exact SKU match is left as it is (the
  SKU match stays first and alone relevant). Each moved row takes the fused score of the
  place it lands on, so the rules' boosts (a factor on the score) keep their scale.
- Pins and hidden products are the rules' (they run after), `count` and the related
  products do not change.
- Which ranker is live is read at most every SEARCH_RANKER_REFRESH_SECONDS (one indexed
  lookup of its id and xmin); a new one is parsed once. No live ranker, a ranker whose
  model does not load or whose features are not this code's, or a prediction that fails:
  fusion's order, and a log line. SEARCH_RANKER_ENABLED off: fusion, nothing read.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from search.features import FEATURES, features_matrix
from search.models import Ranker
from search.retrieval import RankedProduct
from shop_search.db_routers import read_connection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRanker:
    pk: int
    name: str
    booster: object  # lightgbm.Booster

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(matrix, num_threads=1), np.float64)


class RankerUnusable(ValueError):
    """A stored ranker that cannot rank: its model text does not load, or it was trained on
    other features than this code computes."""


def ranker_load(ranker: Ranker) -> LoadedRanker:
    import lightgbm

    if tuple(ranker.features) != FEATURES:
        raise RankerUnusable(
            f"ranker {ranker.name} was trained on other features than search.features "
            f"computes ({len(ranker.features)} vs {len(FEATURES)}): train a new one"
        )
    try:
        booster = lightgbm.Booster(model_str=ranker.model_text)
    except Exception as exc:  # LightGBMError, or anything a damaged text raises
        raise RankerUnusable(f"ranker {ranker.name}'s model does not load: {exc}") from exc
    if booster.num_feature() != len(FEATURES):
        raise RankerUnusable(f"ranker {ranker.name}'s model has {booster.num_feature()} features")
    return LoadedRanker(ranker.pk, ranker.name, booster)


_loaded: dict[tuple, LoadedRanker] = {}


def ranker_loaded(ranker: Ranker) -> LoadedRanker:
    """`ranker` parsed once per process (an interleaving test's candidate, searched often)."""
    key = (ranker.pk, ranker.created)
    if key not in _loaded:
        _loaded.clear()  # one candidate at a time is tested
        _loaded[key] = ranker_load(ranker)
    return _loaded[key]


_live: dict = {"checked": -math.inf, "key": None, "ranker": None}
_live_lock = threading.Lock()


def _live_key() -> tuple | None:
    # xmin: a row rewritten (rolled back and made live again) is another version. Inside a
    # search, on its replica: a ranker made live reaches it with the replica's lag.
    with read_connection().cursor() as cursor:
        cursor.execute(
            "SELECT id, xmin::text FROM search_ranker WHERE status = %s", [Ranker.Status.ACTIVE]
        )
        row = cursor.fetchone()
    return tuple(row) if row else None


def ranker_live() -> LoadedRanker | None:
    """This process's live ranker (None: none, or switched off), reloaded when another goes
    live; checked at most every SEARCH_RANKER_REFRESH_SECONDS."""
    if not settings.SEARCH_RANKER_ENABLED:
        return None
    now = time.monotonic()
    if now - _live["checked"] < settings.SEARCH_RANKER_REFRESH_SECONDS:
        return _live["ranker"]
    key = _live_key()
    with _live_lock:
        if key != _live["key"]:
            loaded = None
            if key is not None:
                ranker = Ranker.objects.filter(pk=key[0]).first()
                try:
                    loaded = ranker_load(ranker) if ranker is not None else None
                except RankerUnusable as exc:
                    logger.error("learned ranker not used, fusion ranks: %s", exc)
                else:
                    logger.info("learned ranker %s loaded", ranker)
            _live.update(key=key, ranker=loaded)
        _live["checked"] = now
        return _live["ranker"]


def ranker_rerank(rows: list[RankedProduct], ranker: LoadedRanker | None) -> list[RankedProduct]:
    """The rows with the first SEARCH_RANKER_WINDOW re-ranked by `ranker` (module doc)."""
    if ranker is None or any(row.sku_match for row in rows):
        return rows
    window = rows[: settings.SEARCH_RANKER_WINDOW]
    places = [i for i, row in enumerate(window) if row.relevant]
    if len(places) < 2:
        return rows
    moving = [window[i] for i in places]
    try:
        scores = ranker.scores(features_matrix(moving))
    except Exception:
        logger.exception("learned ranker %s failed; fusion's order kept", ranker.name)
        return rows
    if not np.all(np.isfinite(scores)):
        logger.error("learned ranker %s gave a non-finite score; fusion's order kept", ranker.name)
        return rows
    order = sorted(range(len(moving)), key=lambda i: (-scores[i], i))  # ties: fusion's order
    reranked = list(rows)
    for rank, (place, i) in enumerate(zip(places, order, strict=True)):
        # The place's fused score, nudged so that equal scores keep the ranker's order.
        score = window[place].score + (len(places) - rank) * 1e-9
        reranked[place] = moving[i].rescored(score)
    return reranked


# --- going live, rolling back -------------------------------------------------------------


def ranker_live_row() -> Ranker | None:
    return Ranker.objects.filter(status=Ranker.Status.ACTIVE).first()


def ranker_activate(*, ranker: Ranker) -> Ranker:
    """Make `ranker` the live one in one transaction (the live one retires); every process
    loads it within SEARCH_RANKER_REFRESH_SECONDS."""
    with transaction.atomic():
        Ranker.objects.select_for_update().filter(status=Ranker.Status.ACTIVE).exclude(
            pk=ranker.pk
        ).update(status=Ranker.Status.RETIRED)
        Ranker.objects.filter(pk=ranker.pk).update(
            status=Ranker.Status.ACTIVE, activated=timezone.now()
        )
    ranker.refresh_from_db()
    ranker_forget()
    logger.info("learned ranker %s is live", ranker)
    return ranker


def ranker_rollback() -> Ranker | None:
    """One step back: the ranker that was live before the live one (the latest retired that
    was ever live), or none (fusion alone). Returns the ranker now live."""
    live = ranker_live_row()
    previous = (
        Ranker.objects.filter(status=Ranker.Status.RETIRED, activated__isnull=False)
        .exclude(pk=getattr(live, "pk", None))
        .order_by("-activated")
        .first()
    )
    if previous is not None:
        if live is not None:  # older than `previous` from now on: not what the next step finds
            Ranker.objects.filter(pk=live.pk).update(activated=None)
        return ranker_activate(ranker=previous)
    Ranker.objects.filter(status=Ranker.Status.ACTIVE).update(status=Ranker.Status.RETIRED)
    ranker_forget()
    logger.info("learned ranker %s rolled back: fusion ranks", live)
    return None


def ranker_forget() -> None:
    """Read the live ranker again at the next search (tests, after making one live)."""
    _live.update(checked=-math.inf, key=None, ranker=None)
