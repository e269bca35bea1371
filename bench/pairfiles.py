"""Benchmark of the pair-file commands (not a test): pairs per second and peak memory.

    .venv/bin/python bench/pairfiles.py [--products 300] [--repeat 20]

Writes a "text<TAB>base64 image" file from the demo catalog's generator (English and
Chinese titles x rendered photos), and one `--repeat` times as long (the same lines
again), then runs `score_pairs` and `evaluate_clip --pairs` on each in a fresh process
with `--model shop-tiny` (no database), and prints pairs/s and each process's peak RSS
against the short file's, measured in the same run: streaming means the long file's peak
stays within 10% of the short one's, i.e. flat in the number of lines.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Run in each child: the command, its own wall time, and the process's high-water RSS.
CHILD = """
import json, os, sys, time
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.dev")
django.setup()
from django.core.management import call_command
from embeddings.encoder import ModelSpec, get_encoder
get_encoder(ModelSpec("shop-tiny"), device="cpu")  # loaded before the clock starts
command, path = sys.argv[1], sys.argv[2]
options = {"model": "shop-tiny", "verbosity": 0}
if command == "score_pairs":
    args, options["out"] = [path], os.devnull
else:
    args, options["pairs"], options["json"] = [], path, True
started = time.perf_counter()
call_command(command, *args, stdout=open(os.devnull, "w"), **options)
seconds = time.perf_counter() - started
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024}))
"""


def write_pairs(path: Path, products: int) -> int:
    from catalog.demo_catalog import demo_products, render_product_image

    lines = 0
    with open(path, "wb") as out:
        for demo in demo_products(products):
            photos = [
                base64.b64encode(render_product_image(demo, index))
                for index in range(demo.image_count)
            ]
            for title in (demo.title, demo.title_zh):
                for photo in photos:
                    out.write(title.encode() + b"\t" + photo + b"\n")
                    lines += 1
    return lines


def run(command: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, command, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.dev")
    import django

    django.setup()
    with tempfile.TemporaryDirectory(prefix="bench-pairs-") as folder:
        short, long = Path(folder) / "short.tsv", Path(folder) / "long.tsv"
        lines = write_pairs(short, args.products)
        data = short.read_bytes()
        with open(long, "wb") as out:
            for _ in range(args.repeat):
                out.write(data)
        sizes = {short: (lines, len(data)), long: (lines * args.repeat, len(data) * args.repeat)}
        print("command          file   lines      MB   pairs/s   peak RSS MB   vs short")
        for command in ("score_pairs", "evaluate_clip"):
            base = None
            for path in (short, long):
                result = run(command, path)
                count, size = sizes[path]
                base = base or result["peak_mb"]
                print(
                    f"{command:15} {path.stem:>5} {count:>7} {size / 1e6:>7.1f} "
                    f"{count / result['seconds']:>9.1f} {result['peak_mb']:>13.0f} "
                    f"{result['peak_mb'] / base:>9.2f}x"
                )


if __name__ == "__main__":
    main()
