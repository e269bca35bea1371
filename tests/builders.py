"""Plain builders the tests share: real images drawn with Pillow, import files, search oracles.

Fixtures live in the conftest.py files; these are functions and constants a test imports.
"""

import base64
import csv
import datetime as dt
import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils import timezone
from PIL import Image, ImageDraw

from catalog.services import demo_catalog_load
from embeddings.models import ImageEmbedding
from search.models import SearchEvent, SearchLog
from search.searchlog import search_event_record, search_log_record

ROOT = Path(__file__).resolve().parents[1]

COLOURS = [
    (220, 20, 20),
    (20, 20, 220),
    (20, 180, 20),
    (240, 220, 30),
    (20, 20, 20),
    (240, 240, 240),
    (160, 40, 200),
    (250, 140, 0),
]


def jpeg_bytes(colour=(200, 30, 30), size=96, stripes=None, seed=0) -> bytes:
    """A small photo-like JPEG: a coloured square with optional stripes and a little noise."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([size // 6, size // 6, size * 5 // 6, size * 5 // 6], fill=tuple(colour))
    if stripes:
        for y in range(size // 6, size * 5 // 6, 8):
            draw.rectangle([size // 6, y, size * 5 // 6, y + 3], fill=tuple(stripes))
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def corrupt_jpeg_bytes() -> bytes:
    """A JPEG cut off in the middle of its pixel data: the header reads, decoding fails."""
    data = jpeg_bytes(size=128)
    return data[: len(data) // 3]


def png_bomb(width: int, height: int) -> bytes:
    """A valid, tiny PNG of a huge black 1-bit image: decoding it would need gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def png_bytes(colour=(30, 30, 200), size=80) -> bytes:
    """A plain PNG with a diagonal band: lossless, so every decoder sees the same pixels."""
    image = Image.new("RGB", (size, size), tuple(colour))
    ImageDraw.Draw(image).line([(0, 0), (size, size)], fill=(250, 250, 250), width=size // 5)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def pairs_tsv(pairs: list[tuple[str, bytes]], encoding: str = "utf-8") -> bytes:
    """The toolkits' pair file: "text<TAB>base64 image" lines, no header."""
    return b"".join(
        text.encode(encoding) + b"\t" + base64.b64encode(image) + b"\n" for text, image in pairs
    )


def csv_bytes(rows: list[dict], columns=None, bom=False) -> bytes:
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return ("\ufeff" if bom else "").encode() + text.getvalue().encode("utf-8")


def zip_bytes(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def jsonl_bytes(rows: list) -> bytes:
    return b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)


def brute_force_ranking(space, query_vector):
    """Exact cosine ranking of products by their best image, in numpy."""
    rows = ImageEmbedding.objects.filter(space=space, vector__isnull=False).values_list(
        "image__product_id", "vector"
    )
    # The query goes through halfvec too, so round it the same way.
    query = query_vector.astype(np.float16).astype(np.float64)
    best: dict[int, float] = {}
    for product_id, vector in rows:
        vector = np.asarray(vector, dtype=np.float64)
        score = float(vector @ query / (np.linalg.norm(vector) * np.linalg.norm(query)))
        best[product_id] = max(score, best.get(product_id, -2.0))
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))


def search_logged(*, day, query, shown, space, clicks=(), result_count=None, hour=10, kind="text"):
    """A logged search on `day` (at `hour`) that showed the products `shown`, with clicks
    on those at `clicks` (1-based positions), each a minute after the one before."""
    at = dt.datetime.combine(day, dt.time(hour), tzinfo=timezone.get_current_timezone())
    search_id = search_log_record(
        kind=kind,
        channel=SearchLog.Channel.API,
        space=space,
        query=query,
        product_ids=[p.pk for p in shown],
        result_count=len(shown) if result_count is None else result_count,
    )
    SearchLog.objects.filter(pk=search_id).update(created=at)  # recording stamps "now"
    for minute, position in enumerate(clicks, start=1):
        event, _ = search_event_record(
            search_id=search_id, type="click", product_id=shown[position - 1].pk, session=""
        )
        SearchEvent.objects.filter(pk=event.pk).update(created=at + dt.timedelta(minutes=minute))
    return search_id


def demo_shop_pinned(count: int, *, ids_after: int) -> None:
    """The demo catalog (unembedded) with product ids from `ids_after` + 1 on.

    Fine-tuning's validation split goes by product id: pinned ids give the same split, the
    same trained models and the same metrics every run. Unpinned, the ids start wherever
    earlier tests of the whole run left the sequence, so a test's split would change with
    the tests before it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('catalog_product', 'id'), %s)", [ids_after]
        )
    demo_catalog_load(count=count, seed=0, embed=False)


def manage_py_env(folder: Path, settings_module: str = "base") -> dict[str, str]:
    """The environment of a `manage.py` process started by a test: `settings_module` (of
    shop_search.settings) pointed at this test's database, photos and models (written into
    `folder`), one torch thread."""
    db = {k: connection.settings_dict[k] for k in ("ENGINE", "NAME", "USER", "HOST", "PORT")}
    (folder / "test_process_settings.py").write_text(
        "from pathlib import Path\n"
        f"from shop_search.settings.{settings_module} import *  # noqa: F403\n"
        f"DATABASES = {{'default': {db!r}}}\n"
        f"MEDIA_ROOT = Path({str(settings.MEDIA_ROOT)!r})\n"
        f"MODEL_DIR = Path({str(settings.MODEL_DIR)!r})\n"
        "FINETUNE_VAL_FRACTION = 0.25\n"
        "FINETUNE_MIN_PAIRS = 16\n"
        "CLIP_DEVICE = 'cpu'\n"
    )
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "test_process_settings",
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }


def finetune_run_reported(*, source, name="shop-tiny@ft-demo", catalog_gate=True):
    """A finished fine-tune run and its candidate space with the metrics a real run stores
    (the figures made up), for the admin's report pages; `catalog_gate=False`: stored
    before the catalog gate's own say was."""
    from embeddings.encoder import ModelSpec
    from embeddings.models import FinetuneRun
    from embeddings.spaces import space_create

    recall = {"t2i_r1": 0.41, "t2i_r5": 0.83, "t2i_r10": 0.94, "i2t_r1": 0.39}
    recall |= {"i2t_r5": 0.81, "i2t_r10": 0.92, "mean_recall": 0.717}
    floors = {"p2": 0.21, "p50": 0.33, "p98": 0.41, "max": 0.47}
    metrics = {
        "active_space": source.name,
        "active_before": {**recall, "mean_recall": 0.302},
        "before": {**recall, "mean_recall": 0.302},
        "after": recall,
        "epochs": [{"val_mean_recall": v} for v in (0.42, 0.61, 0.69, 0.717)],
        "losses": [2.1, 1.7, 1.2, 0.9, 0.7, 0.6],
        "training": {"train_pairs": 590, "epochs_completed": 4, "pairs_per_second": 212.4},
        "gates": [{"gate": "query nDCG", "passed": None, "detail": "no judged queries yet"}],
        "decision": "promoted: validation mean recall +0.415 over the demo space",
        "decided_by": "every gate passed",
        "passed_offline_gates": True,
        "calibration": {
            "real_similarity": floors,
            "gibberish_similarity": floors,
            "gibberish_best_per_query": floors,
            "similarity_floor": 0.231,
            "real_queries_above_floor": 0.98,
            "real_queries": 74,
            "gibberish_photos_per_query_at_floor": 98.44,
            "unknown_words_floor": 0.402,
            "real_queries_above_unknown_words_floor": 0.61,
            "gibberish_photos_per_query_at_unknown_words_floor": 0.12,
            "catalog_images": 288,
            "validation_images": 37,
            "gibberish_queries": 400,
        },
    }
    if catalog_gate:
        metrics["catalog_gate"] = {"passed": True, "margin": 0.005}
    space = space_create(
        name=name, spec=ModelSpec("shop-tiny"), parent=source, build_indexes=False, metrics=metrics
    )
    return FinetuneRun.objects.create(
        status=FinetuneRun.Status.SUCCEEDED,
        options={"epochs": 4, "batch_size": 32, "no_promote": False, "seed": 0},
        source=source,
        space=space,
        progress={"phase": "done", "step": 120, "total_steps": 120, "epoch": 4},
    )
