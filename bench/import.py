"""Benchmark of the bulk import (not a test): rows per second and peak memory.

    .venv/bin/python bench/import.py [--products 10000] [--rows 100000]

Writes the demo catalog as a CSV + images ZIP, and a large CSV without images, then
imports each in a fresh process (embedding excluded) into a scratch database on the
embedded server, and prints, against baselines measured in the same run:
- speed: rows/s of the import next to `demo_catalog_load` writing the same products and
  photos straight from the generator (no file, no validation);
- memory: each process's peak RSS, and above its own RSS before the import started
  (Django, torch and open_clip already loaded); the large CSV's peak should stay within
  20% of the 10k-with-images one, i.e. flat in the number of rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
DATABASE = "bench_shop_search_import"


def setup_django(database: str | None = None) -> None:
    import django
    from django.conf import settings

    settings.DATABASES["default"]["TEST"] = {"NAME": DATABASE}
    if database:
        settings.DATABASES["default"]["NAME"] = database
    if os.environ.get("BENCH_MEDIA_ROOT"):
        settings.MEDIA_ROOT = os.environ["BENCH_MEDIA_ROOT"]
    django.setup()


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def rss_mb() -> float:
    return _status_mb("VmRSS:")


def peak_rss_reset() -> None:
    # Linux: the high-water mark restarts from the current RSS, so the peak measured
    # afterwards is the import's, not the start-up's (torch and open_clip load then).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM:")


# --- files --------------------------------------------------------------------------------


def write_files(folder: Path, products: int, rows: int) -> dict[str, tuple[Path, Path | None]]:
    from catalog.demo_catalog import demo_products, render_product_image

    columns = ["sku", "title", "description", "brand", "category", "price", "currency"]
    columns += ["in_stock", "image", "colour", "material", "title_zh"]

    def row(demo, images: str) -> list:
        return [
            demo.sku,
            demo.title,
            demo.description,
            demo.brand,
            " > ".join(demo.category),
            demo.price,
            demo.currency,
            "yes" if demo.in_stock else "no",
            images,
            demo.colour,
            demo.material,
            demo.title_zh,
        ]

    files = {}
    with_images = folder / f"demo-{products}.csv"
    archive = folder / f"demo-{products}-images.zip"
    with (
        open(with_images, "w", newline="") as out,
        zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as images,
    ):
        writer = csv.writer(out)
        writer.writerow(columns)
        for demo in demo_products(products):
            names = [f"{demo.sku}-{n}.jpg" for n in range(demo.image_count)]
            for n, name in enumerate(names):
                images.writestr(f"images/{name}", render_product_image(demo, n))
            writer.writerow(row(demo, "|".join(names)))
    files["with_images"] = (with_images, archive)
    for count in (products, rows):
        path = folder / f"demo-{count}-no-images.csv"
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for demo in demo_products(count):
                writer.writerow(row(demo, ""))
        files[f"no_images_{count}"] = (path, None)
    return files


# --- one measured run, in its own process --------------------------------------------------------


def child(args) -> None:
    setup_django(args.database)
    from catalog.importing.run import import_job_run
    from catalog.models import ImportJob, Product
    from catalog.services import demo_catalog_load

    Product.objects.count()  # connect before measuring the baseline
    baseline = rss_mb()
    peak_rss_reset()
    started = time.perf_counter()
    if args.child == "demo_catalog_load":
        rows = demo_catalog_load(count=args.products, embed=False)
        failed = 0
    else:
        job = ImportJob.objects.create(format="csv", source_name=args.child)
        with ExitStack() as files:
            source = files.enter_context(open(args.child, "rb"))
            images = files.enter_context(open(args.images, "rb")) if args.images else None
            import_job_run(job=job, source=source, images=images, embed=False)
        if job.status != "done":
            raise SystemExit(f"import failed: {job.error}")
        rows, failed = job.rows_processed, job.rows_failed
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": rows,
                "failed": failed,
                "seconds": seconds,
                "baseline_mb": baseline,
                "peak_mb": peak_rss_mb(),
            }
        )
    )


def measure(database: str, media: str, *arguments: str) -> dict:
    env = {**os.environ, "BENCH_MEDIA_ROOT": media}
    command = [sys.executable, __file__, "--database", database, *arguments]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{' '.join(arguments)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def catalog_clear() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE catalog_product, catalog_productimage, catalog_category, "
            "catalog_importjob, catalog_importrowerror CASCADE"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--child")
    parser.add_argument("--images")
    parser.add_argument("--database")
    args = parser.parse_args()
    if args.child:
        return child(args)

    setup_django()
    from django.db import connection

    folder = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        started = time.perf_counter()
        files = write_files(folder, args.products, args.rows)
        csv_path, zip_path = files["with_images"]
        large_csv = files[f"no_images_{args.rows}"][0]
        print(
            f"files: {args.products:,} products, {zip_path.stat().st_size / 1e6:.0f} MB of "
            f"images; {args.rows:,}-row CSV {large_csv.stat().st_size / 1e6:.0f} MB "
            f"(written in {time.perf_counter() - started:.0f} s)"
        )
        database = connection.creation.create_test_db(verbosity=0, keepdb=False)
        runs = [
            ("demo_catalog_load (baseline)", ["--child", "demo_catalog_load"]),
            (
                f"import {args.products:,} + images",
                ["--child", str(csv_path), "--images", str(zip_path)],
            ),
            (
                f"re-import {args.products:,} + images",
                ["--child", str(csv_path), "--images", str(zip_path)],
            ),
            (
                f"import {args.products:,}, no images",
                ["--child", str(files[f"no_images_{args.products}"][0])],
            ),
            (
                f"import {args.rows:,}, no images",
                ["--child", str(files[f"no_images_{args.rows}"][0])],
            ),
        ]
        results = {}
        for name, arguments in runs:
            if not name.startswith("re-import"):
                catalog_clear()
            media = tempfile.mkdtemp(prefix="media-", dir=folder)
            results[name] = result = measure(
                database, media, *arguments, "--products", str(args.products)
            )
            growth = result["peak_mb"] - result["baseline_mb"]
            print(
                f"{name:34} {result['rows'] / result['seconds']:8,.0f} rows/s "
                f"({result['rows']:,} rows in {result['seconds']:6.1f} s)   peak RSS "
                f"{result['peak_mb']:6.0f} MB (+{growth:4.0f} MB over "
                f"{result['baseline_mb']:.0f} MB before the import)"
            )
        names = list(results)
        baseline, images, large = results[names[0]], results[names[1]], results[names[4]]
        speed = (images["rows"] / images["seconds"]) / (baseline["rows"] / baseline["seconds"])
        print(f"import with images vs demo_catalog_load: {speed:.2f}x the rows/s")
        ratio = large["peak_mb"] / images["peak_mb"]
        verdict = "within" if abs(ratio - 1) <= 0.2 else "NOT within"
        print(
            f"peak memory, {args.rows:,} rows without images vs {args.products:,} with images: "
            f"{ratio:.2f}x ({verdict} 20%)"
        )
        connection.creation.destroy_test_db(database, verbosity=0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
