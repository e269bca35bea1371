"""Bulk import of a CSV + images ZIP: what a merchandiser sees, good rows and bad."""

import functools
import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from catalog.importing.run import import_job_run
from catalog.models import Category, ImportJob, ImportRowError, Product, ProductImage
from embeddings.models import CaptionEmbedding, ImageEmbedding
from tests.builders import corrupt_jpeg_bytes, csv_bytes, jpeg_bytes, zip_bytes

pytestmark = pytest.mark.django_db

RED = jpeg_bytes((220, 20, 20), seed=1)
BLUE = jpeg_bytes((20, 40, 160), seed=2)
GREEN = jpeg_bytes((20, 160, 40), seed=3)


def shop_files(tmp_path, rows, images=None, bom=False):
    data = tmp_path / "products.csv"
    data.write_bytes(csv_bytes(rows, bom=bom))
    archive = tmp_path / "images.zip"
    archive.write_bytes(zip_bytes(images or {"red.jpg": RED, "photos/blue.jpg": BLUE}))
    return str(data), str(archive)


TSHIRT = {
    "sku": "TS-1",
    "title": "Red t-shirt",
    "description": "Soft cotton.",
    "brand": "Acme",
    "category": "Women > Tops",
    "price": "12.50",
    "currency": "eur",
    "in_stock": "yes",
    "image": "red.jpg|photos/blue.jpg",
    "colour": "red",
    "title_zh": "红色T恤",
}
JEANS = {
    "sku": "JE-1",
    "title": "Blue jeans",
    "price": "49",
    "in_stock": "0",
    "image": "blue.jpg",  # found by its file name in the ZIP's folder
    "category": "Women > Trousers",
}


def test_csv_and_zip_become_products_with_images_that_are_embedded(
    tmp_path, embed_on_commit, capsys
):
    data, archive = shop_files(tmp_path, [TSHIRT, JEANS], bom=True)
    with embed_on_commit():
        call_command("import_products", data, images=archive)
    out = capsys.readouterr().out
    assert "2 rows read: 2 created, 0 updated, 0 unchanged, 0 failed; 3 images added" in out

    shirt = Product.objects.get(sku="TS-1")
    assert (shirt.title, shirt.description, shirt.brand) == ("Red t-shirt", "Soft cotton.", "Acme")
    assert (shirt.price, shirt.currency, shirt.in_stock) == (Decimal("12.50"), "EUR", True)
    assert str(shirt.category) == "Women > Tops"
    assert shirt.attributes == {"colour": "red", "titles": {"zh": "红色T恤"}}
    jeans = Product.objects.get(sku="JE-1")
    assert (jeans.price, jeans.in_stock, jeans.category.parent) == (
        Decimal("49.00"),
        False,
        shirt.category.parent,
    )
    assert Category.objects.filter(name="Women").count() == 1

    images = list(shirt.images.all())
    assert [(i.position, i.width, i.height) for i in images] == [(0, 96, 96), (1, 96, 96)]
    assert images[0].file.read() == RED
    # The same photo in two products is stored once, under its sha256.
    blue = jeans.images.get()
    assert blue.file.name == images[1].file.name
    assert blue.sha256 in blue.file.name

    assert ImageEmbedding.objects.filter(vector__isnull=False).count() == 3
    assert set(CaptionEmbedding.objects.filter(product=shirt).values_list("field", "text")) == {
        ("title", "Red t-shirt"),
        ("title_zh", "红色T恤"),
        ("description", "Soft cotton."),
    }
    job = ImportJob.objects.get()
    assert (job.status, job.rows_created, job.source_name) == ("done", 2, data)


def test_embedding_is_queued_per_batch_never_per_image(
    run_import, django_capture_on_commit_callbacks
):
    rows = [
        {"sku": f"P-{n}", "title": f"Product {n}", "price": "5", "image": "red.jpg|blue.jpg"}
        for n in range(5)
    ]
    archive = zip_bytes({"red.jpg": RED, "blue.jpg": BLUE})
    with django_capture_on_commit_callbacks() as callbacks:
        run_import(csv_bytes(rows), archive, batch_size=3)
    # The task senders (partials of a task); the search vocabulary's recount runs on commit too.
    tasks = [cb for cb in callbacks if isinstance(cb, functools.partial)]
    queued = [(cb.func.__self__.name, len(cb.args[0])) for cb in tasks]
    # Two committed batches (3 + 2 products), each one image task and one caption task.
    assert queued == [
        ("embeddings.tasks.embed_images", 6),
        ("embeddings.tasks.embed_captions", 3),
        ("embeddings.tasks.embed_images", 4),
        ("embeddings.tasks.embed_captions", 2),
    ]


def test_importing_the_same_file_again_changes_nothing_and_a_new_price_updates(
    run_import, django_capture_on_commit_callbacks
):
    archive = zip_bytes({"red.jpg": RED, "photos/blue.jpg": BLUE})
    run_import(csv_bytes([TSHIRT, JEANS]), archive)
    before = {p.sku: p.updated for p in Product.objects.all()}
    images = set(ProductImage.objects.values_list("id", "file", "position"))

    with django_capture_on_commit_callbacks() as callbacks:
        again = run_import(csv_bytes([TSHIRT, JEANS]), archive)
    assert (again.rows_unchanged, again.rows_created, again.rows_updated) == (2, 0, 0)
    assert {p.sku: p.updated for p in Product.objects.all()} == before
    assert set(ProductImage.objects.values_list("id", "file", "position")) == images
    assert callbacks == []  # nothing to embed again

    cheaper = {**JEANS, "price": "39.90"}
    job = run_import(csv_bytes([TSHIRT, cheaper]), archive)
    assert (job.rows_updated, job.rows_unchanged, job.images_created) == (1, 1, 0)
    assert Product.objects.get(sku="JE-1").price == Decimal("39.90")
    assert set(ProductImage.objects.values_list("id", "file", "position")) == images


def test_changed_images_are_replaced_in_order_keeping_the_unchanged_ones(run_import):
    archive = zip_bytes({"red.jpg": RED, "blue.jpg": BLUE, "green.jpg": GREEN})
    run_import(csv_bytes([{**TSHIRT, "image": "red.jpg|blue.jpg"}]), archive)
    blue_id = ProductImage.objects.get(sha256=ProductImage.objects.last().sha256).pk
    job = run_import(csv_bytes([{**TSHIRT, "image": "blue.jpg|green.jpg"}]), archive)
    assert (job.rows_updated, job.images_created) == (1, 1)
    images = list(Product.objects.get(sku="TS-1").images.all())
    assert [i.file.read() for i in images] == [BLUE, GREEN]
    assert images[0].pk == blue_id  # kept (its vector too), only moved


def test_bad_rows_are_reported_with_line_field_and_reason_and_good_rows_imported(
    run_import, settings
):
    settings.MAX_UPLOAD_IMAGE_BYTES = 20_000
    big = jpeg_bytes(size=400, seed=9)
    assert len(big) > 20_000
    archive = zip_bytes(
        {
            "red.jpg": RED,
            "broken.jpg": corrupt_jpeg_bytes(),
            "notes.jpg": b"these are notes, not a photo",
            "big.jpg": big,
        }
    )
    rows = [
        {"sku": "OK-1", "title": "Good", "price": "1.00", "image": "red.jpg"},  # line 2
        {"sku": "", "title": "No SKU", "price": "1"},  # 3
        {"sku": "NT-1", "title": "", "price": "1"},  # 4
        {"sku": "PR-1", "title": "Bad price", "price": "12.50 €"},  # 5
        {"sku": "IM-1", "title": "Unknown image", "price": "1", "image": "nope.jpg"},  # 6
        {"sku": "IM-2", "title": "Corrupt", "price": "1", "image": "broken.jpg"},  # 7
        {"sku": "IM-3", "title": "Not an image", "price": "1", "image": "notes.jpg"},  # 8
        {"sku": "IM-4", "title": "Too large", "price": "1", "image": "big.jpg"},  # 9
        {"sku": "ST-1", "title": "Stock?", "price": "1", "in_stock": "maybe"},  # 10
        {"sku": "NP-1", "title": "No price"},  # 11
        {"sku": "OK-2", "title": "Also good", "price": "2"},  # 12
    ]
    job = run_import(csv_bytes(rows), archive)
    assert (job.status, job.rows_processed, job.rows_created, job.rows_failed) == (
        "done",
        11,
        2,
        9,
    )
    assert set(Product.objects.values_list("sku", flat=True)) == {"OK-1", "OK-2"}
    report = list(
        ImportRowError.objects.filter(job=job).values_list("line", "sku", "field", "message")
    )
    assert report[:4] == [
        (3, "", "sku", "is required"),
        (4, "NT-1", "title", "is required"),
        (5, "PR-1", "price", "'12.50 €' is not a number (write 12.50, without a currency sign)"),
        (6, "IM-1", "image", "'nope.jpg': not in the ZIP"),
    ]
    assert report[4][:3] == (7, "IM-2", "image")
    assert "corrupt or truncated" in report[4][3]
    assert report[5:] == [
        (8, "IM-3", "image", "'notes.jpg': not a JPEG, PNG, WebP or GIF image"),
        (9, "IM-4", "image", f"'big.jpg': {len(big) / 1e3:.1f} kB, over the limit of 20.0 kB"),
        (10, "ST-1", "in_stock", "'maybe' is not yes/no (use true, false, yes, no, 1 or 0)"),
        (11, "NP-1", "price", "is required"),
    ]


def test_an_existing_product_can_be_updated_without_its_price(run_import):
    run_import(csv_bytes([{"sku": "A-1", "title": "Mug", "price": "8"}]))
    job = run_import(csv_bytes([{"sku": "A-1", "title": "Blue mug", "in_stock": "no"}]))
    product = Product.objects.get(sku="A-1")
    assert (job.rows_updated, product.title, product.price, product.in_stock) == (
        1,
        "Blue mug",
        Decimal("8.00"),
        False,
    )


def test_csv_details_multiline_values_crlf_and_extra_columns(run_import):
    data = (
        b"sku,title,description,price,material\r\n"
        b'A-1,Mug,"Two lines:\r\nstoneware, glazed",8,clay\r\n'
        b'A-2,"Bowl, large",,9\r\n'
        b"A-3,Cup,too,many,values,here\r\n"
        b"\r\n"
        b"A-4,Plate,,x\r\n"
    )
    job = run_import(data)
    assert Product.objects.get(sku="A-1").description == "Two lines:\r\nstoneware, glazed"
    assert Product.objects.get(sku="A-1").attributes == {"material": "clay"}
    assert Product.objects.get(sku="A-2").title == "Bowl, large"
    # Line numbers count the file's lines, so a multi-line value shifts the next ones.
    assert list(job.row_errors.values_list("line", "field")) == [(5, ""), (7, "price")]
    assert job.row_errors.first().message == (
        "6 values but the header has 5 columns (a ',' inside a value needs quotes)"
    )


def test_semicolon_separated_csv_from_a_spreadsheet_is_read(run_import):
    data = "\ufeffSKU;Title;Price;Farbe\nA-1;Becher;8,50;rot\nA-2;Teller;1.234,50;weiß\n"
    job = run_import(data.encode())
    product = Product.objects.get()
    assert (product.price, product.attributes) == (Decimal("8.50"), {"Farbe": "rot"})
    assert list(job.row_errors.values_list("line", "field")) == [(3, "price")]


def test_a_file_without_sku_column_fails_with_a_clear_reason(tmp_path):
    data = tmp_path / "p.csv"
    data.write_bytes(b"name,price\nMug,8\n")
    with pytest.raises(CommandError, match="the header has no 'sku' or 'title' column"):
        call_command("import_products", str(data))
    assert not Product.objects.exists()


def test_a_sku_repeated_in_the_file_is_imported_then_updated_by_the_later_row(run_import):
    rows = [
        {"sku": "A-1", "title": "Mug", "price": "8"},
        {"sku": "B-1", "title": "Bowl", "price": "9"},
        {"sku": "A-1", "title": "Mug", "price": "7.50"},
    ]
    job = run_import(csv_bytes(rows))
    assert (job.rows_created, job.rows_updated) == (2, 1)
    assert Product.objects.get(sku="A-1").price == Decimal("7.50")


def test_dry_run_validates_everything_and_writes_nothing(tmp_path, capsys):
    bad = {"sku": "IM-1", "title": "Unknown image", "price": "1", "image": "nope.jpg"}
    data, archive = shop_files(tmp_path, [TSHIRT, JEANS, bad])
    report = tmp_path / "report.csv"
    call_command("import_products", data, images=archive, dry_run=True, report=str(report))
    out = capsys.readouterr()
    assert "Dry run: 3 rows read: 2 would be created" in out.out
    assert "1 failed; 3 images would be added" in out.out
    assert "line 4: image: 'nope.jpg': not in the ZIP" in out.err
    assert report.read_text().splitlines() == [
        "line,sku,field,error",
        "4,IM-1,image,'nope.jpg': not in the ZIP",
    ]
    assert not Product.objects.exists()
    assert not Category.objects.exists()
    assert not ProductImage.objects.exists()
    assert not ImportJob.objects.exists()


def test_dry_run_of_changes_counts_what_would_change(run_import):
    run_import(csv_bytes([{"sku": "A-1", "title": "Mug", "price": "8", "category": "Home"}]))
    rows = [
        {"sku": "A-1", "title": "Mug", "price": "9", "category": "Home"},
        {"sku": "A-2", "title": "Cup", "price": "5", "category": "Home > Kitchen"},
    ]
    job = run_import(csv_bytes(rows), dry_run=True)
    assert (job.rows_updated, job.rows_created) == (1, 1)
    assert Product.objects.get().price == Decimal("8.00")
    assert not Category.objects.filter(name="Kitchen").exists()


def test_an_interrupted_import_leaves_whole_products_and_running_it_again_completes_it(
    tmp_path, capsys
):
    rows = [
        {"sku": f"P-{n}", "title": f"Product {n}", "price": "5", "image": "red.jpg|blue.jpg"}
        for n in range(7)
    ] + [{"sku": "BAD", "title": "", "price": "1"}]
    data, archive = shop_files(tmp_path, rows, images={"red.jpg": RED, "blue.jpg": BLUE})

    def stop_after_first_batch(job):
        raise KeyboardInterrupt

    job = ImportJob.objects.create(format="csv", source_name=data)
    with (
        open(data, "rb") as source,
        open(archive, "rb") as images,
        pytest.raises(KeyboardInterrupt),
    ):
        import_job_run(
            job=job, source=source, images=images, batch_size=3, progress=stop_after_first_batch
        )
    job.refresh_from_db()
    assert job.status == "failed"
    assert "stopped after line 4" in job.error
    assert Product.objects.count() == 3 == job.rows_created
    assert all(p.images.count() == 2 for p in Product.objects.all())

    # The job itself resumes after its last committed batch (a redelivered task)...
    with open(data, "rb") as source, open(archive, "rb") as images:
        import_job_run(job=job, source=source, images=images, batch_size=3)
    job.refresh_from_db()
    assert (job.status, job.rows_processed, job.rows_created, job.rows_failed) == (
        "done",
        8,
        7,
        1,
    )
    assert job.row_errors.count() == 1
    # ...and running the command again changes nothing more.
    call_command("import_products", data, images=archive)
    out = capsys.readouterr().out
    assert "0 created, 0 updated, 7 unchanged, 1 failed" in out
    rerun = ImportJob.objects.latest("created")
    assert f"Every failed row, and why: /admin/catalog/importjob/{rerun.pk}/report/" in out
    assert ProductImage.objects.count() == 14


def test_the_file_is_streamed_not_loaded(run_import):
    rows = [{"sku": f"P-{n:05d}", "title": f"Product {n}", "price": "5"} for n in range(2000)]
    data = csv_bytes(rows)
    source = io.BytesIO(data)
    positions = []
    job = ImportJob.objects.create(format="csv", source_name="big.csv")
    import_job_run(
        job=job, source=source, batch_size=100, progress=lambda j: positions.append(source.tell())
    )
    # When the first batch commits, only its rows have been read from the file.
    assert positions[0] < len(data) / 10
    assert Product.objects.count() == 2000
