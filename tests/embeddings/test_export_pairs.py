"""export_pairs: the catalog for the toolkits and for open_clip_train, read back by both."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command

from catalog.models import ProductImage
from catalog.services import demo_catalog_load
from embeddings.catalog_pairs import catalog_pairs
from embeddings.models import EmbeddingSpace
from embeddings.pairfiles import PairLine, pair_lines
from embeddings.spaces import space_active, space_encoder, space_ensure_default
from tests.builders import jpeg_bytes

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def shop(settings, make_product):
    # Half for validation, so even a dozen products give both files some pairs.
    settings.FINETUNE_VAL_FRACTION = 0.5
    demo_catalog_load(count=16, seed=0, embed=False)
    # A title with a tab and quotes, which neither format may split or mangle.
    make_product(
        title='The "Tab\tTee",  washed', images=[jpeg_bytes(seed=9)], attributes={"titles": {}}
    )


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_tsv_export_has_finetunes_pairs_and_split(shop, tmp_path):
    out = io.StringIO()
    call_command("export_pairs", str(tmp_path), stdout=out, verbosity=0)
    pairs = catalog_pairs(image_size=space_encoder(space_active()).image_size)
    for name, expected in (("train.tsv", pairs.train), ("dev.tsv", pairs.val)):
        with open(tmp_path / name, "rb") as stream:
            lines = list(pair_lines(stream))
        assert lines
        assert all(isinstance(line, PairLine) for line in lines)
        assert sorted(line.text for line in lines) == sorted(one_line(e.text) for e in expected)
        assert f"{tmp_path / name}: {len(lines)} pairs of" in out.getvalue()
    assert (
        'The "Tab Tee", washed'
        in (tmp_path / "train.tsv").read_text() + (tmp_path / "dev.tsv").read_text()
    )
    # The toolkit files evaluate as they are.
    result = io.StringIO()
    call_command(
        "evaluate_clip", pairs=str(tmp_path / "dev.tsv"), json=True, stdout=result, verbosity=0
    )
    assert json.loads(result.getvalue())["pairs"] == len(pairs.val)


def run_open_clip_train(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """open_clip_train.main through our wrapper (it registers shop-tiny), on CPU."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "embeddings.open_clip_train_main", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_open_clip_train_trains_on_the_csv_export_and_the_checkpoint_loads_back(
    shop, tmp_path, settings, monkeypatch
):
    from open_clip_train.data import CsvDataset

    export = tmp_path / "csv"
    call_command("export_pairs", str(export), format="csv", verbosity=0)
    encoder = space_encoder(space_active())
    pairs = catalog_pairs(image_size=encoder.image_size)

    # Its own dataset class, with its defaults: tab-separated, filepath and title columns,
    # image paths relative to the export folder.
    with monkeypatch.context() as inside:
        inside.chdir(export)
        for name, expected in (("train.csv", pairs.train), ("val.csv", pairs.val)):
            dataset = CsvDataset(
                name, encoder.preprocess, img_key="filepath", caption_key="title",
                tokenizer=encoder.tokenizer,
            )  # fmt: skip
            assert len(dataset) == len(expected)
            assert sorted(dataset.captions) == sorted(one_line(e.text) for e in expected)
            image, tokens = dataset[0]
            assert image.shape == (3, 64, 64)
            assert tokens.shape == (32,)
    # Each photo written once, under its sha256.
    written = {p.stem for p in (export / "images").rglob("*") if p.is_file()}
    assert written == set(ProductImage.objects.values_list("sha256", flat=True))

    trained = run_open_clip_train(
        export,
        "--train-data", "train.csv", "--val-data", "val.csv", "--model", "shop-tiny",
        "--batch-size", "8",
        "--workers", "0", "--epochs", "1", "--device", "cpu", "--precision", "fp32",
        "--lr", "1e-3", "--warmup", "1", "--logs", str(tmp_path / "logs"), "--name", "run",
        "--zeroshot-frequency", "0", "--seed", "0",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    # It validated on val.csv too: its own retrieval metrics are in its log.
    assert "image_to_text_R@1" in (tmp_path / "logs" / "run" / "out.log").read_text()
    checkpoint = tmp_path / "logs" / "run" / "checkpoints" / "epoch_1.pt"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] == 1

    # CLIP_CHECKPOINT: the space a new install would start from.
    EmbeddingSpace.objects.update(status=EmbeddingSpace.Status.RETIRED)
    settings.CLIP_MODEL, settings.CLIP_CHECKPOINT = "shop-tiny", str(checkpoint)
    space = space_ensure_default()
    assert space.source == EmbeddingSpace.Source.CHECKPOINT
    loaded = space_encoder(space).model.state_dict()
    assert loaded.keys() == saved["state_dict"].keys()
    assert all(torch.equal(loaded[k], v) for k, v in saved["state_dict"].items())
    random_init = encoder.model.state_dict()
    assert any(not torch.equal(loaded[k], v) for k, v in random_init.items())

    call_command("export_pairs", str(tmp_path / "tsv"), verbosity=0)
    result = io.StringIO()
    call_command(
        "evaluate_clip", pairs=str(tmp_path / "tsv" / "dev.tsv"), json=True, stdout=result,
        verbosity=0,
    )  # fmt: skip
    evaluation = json.loads(result.getvalue())
    assert evaluation["model"] == space.name
    assert evaluation["pairs"] == len(pairs.val)
    assert 0 <= evaluation["metrics"]["mean_recall"] <= 1


def test_export_refuses_bad_options(db, tmp_path):
    with pytest.raises(CommandError, match="--max-products must be at least 1"):
        call_command("export_pairs", str(tmp_path), max_products=0)
