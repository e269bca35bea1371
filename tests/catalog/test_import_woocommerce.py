"""WooCommerce's product CSV export: simple and variable products, variations by Parent."""

import io
from decimal import Decimal

import pytest
from django.core.management import call_command

from catalog.importing.run import import_job_run
from catalog.models import ImportJob, Product
from tests.builders import csv_bytes, jpeg_bytes, zip_bytes

pytestmark = pytest.mark.django_db

# The columns of WooCommerce's exporter, in its order (WC_Product_CSV_Exporter).
COLUMNS = [
    "ID", "Type", "SKU", "GTIN, UPC, EAN, or ISBN", "Name", "Published", "Is featured?",
    "Visibility in catalog", "Short description", "Description", "Date sale price starts",
    "Date sale price ends", "Tax status", "Tax class", "In stock?", "Stock",
    "Low stock amount", "Backorders allowed?", "Sold individually?", "Weight (kg)",
    "Length (cm)", "Width (cm)", "Height (cm)", "Allow customer reviews?", "Purchase note",
    "Sale price", "Regular price", "Categories", "Tags", "Shipping class", "Images",
    "Download limit", "Download expiry days", "Parent", "Grouped products", "Upsells",
    "Cross-sells", "External URL", "Button text", "Position", "Brands",
    "Attribute 1 name", "Attribute 1 value(s)", "Attribute 1 visible", "Attribute 1 global",
    "Attribute 2 name", "Attribute 2 value(s)", "Attribute 2 visible", "Attribute 2 global",
    "Attribute 3 name", "Attribute 3 value(s)", "Attribute 3 visible", "Attribute 3 global",
    "Meta: _wpcom_is_markdown",
]  # fmt: skip
PHOTOS = {
    "red.jpg": jpeg_bytes((220, 20, 20), seed=1),
    "blue.jpg": jpeg_bytes((20, 40, 160), seed=2),
    "mug.jpg": jpeg_bytes((240, 240, 240), seed=3),
}


def attributes(*triples):
    row = {}
    for n, (name, values, visible) in enumerate(triples, 1):
        row |= {
            f"Attribute {n} name": name,
            f"Attribute {n} value(s)": values,
            f"Attribute {n} visible": visible,
            f"Attribute {n} global": "1",
        }
    return row


TEE = {
    "ID": "10",
    "Type": "variable",
    "SKU": "TEE",
    "Name": "Cotton tee",
    "Published": "1",
    "Is featured?": "1",
    "Visibility in catalog": "visible",
    "Short description": "<p>Soft &amp; light.</p>",
    "Description": "<div>Organic cotton.<script>track()</script></div>",
    "Tax status": "taxable",
    "In stock?": "1",
    "Categories": "Clothing > Tops, Sale",
    "Tags": "cotton, basics",
    "Images": "red.jpg, blue.jpg",
    "Brands": "Acme",
    "Meta: _wpcom_is_markdown": "1",
    **attributes(("Colour", "Red, Blue", "1"), ("Size", "S, M", "1"), ("Material", "Cotton", "1")),
}


def variation(colour, size, parent="TEE", **extra):
    return {
        "ID": "",
        "Type": "variation",
        "SKU": f"TEE-{colour[0]}{size}",
        "Name": f"Cotton tee - {colour}, {size}",
        "Published": "1",
        "In stock?": "1",
        "Stock": "4",
        "Backorders allowed?": "0",
        "Regular price": "20" if size == "S" else "22",
        "Images": f"{colour.lower()}.jpg",
        "Parent": parent,
        **attributes((("Colour", colour, "")), ("Size", size, "")),
        **extra,
    }


MUG = {
    "ID": "20",
    "Type": "simple",
    "SKU": "MUG",
    "GTIN, UPC, EAN, or ISBN": "4006381333931",
    "Name": "Mug",
    "Published": "1",
    "Visibility in catalog": "visible",
    "Description": "A mug.",
    "In stock?": "0",
    "Stock": "0",
    "Sale price": "8",
    "Regular price": "10",
    "Categories": "Kitchen",
    "Images": "mug.jpg",
}
SET = {
    "ID": "30",
    "Type": "grouped",
    "Name": "Breakfast set",
    "Published": "1",
    "Grouped products": "MUG, TEE",
}
DRAFT = {**MUG, "ID": "40", "SKU": "PLATE", "Name": "Plate", "Published": "-1", "Images": ""}
HIDDEN = {**MUG, "ID": "50", "SKU": "BOWL", "Name": "Bowl", "Visibility in catalog": "hidden"}
EXTERNAL = {
    "ID": "60",
    "Type": "external",
    "SKU": "BOOK",
    "Name": "Cookbook",
    "Published": "1",
    "Regular price": "1.234,50",  # a European spreadsheet's thousands
    "External URL": "https://example.com/book",
}


def shop_file():
    # The Blue/M variation comes after another product, named by its parent's ID.
    return [
        TEE,
        variation("Red", "S"),
        variation("Red", "M"),
        variation("Blue", "S"),
        MUG,
        variation("Blue", "M", parent="id:10"),
        SET,
        DRAFT,
        HIDDEN,
        EXTERNAL,
    ]


def run(lines, **options) -> ImportJob:
    # As the command and the API do: the job says CSV, the header says WooCommerce.
    job = ImportJob.objects.create(format="csv", source_name="wc-product-export.csv")
    import_job_run(
        job=job,
        source=io.BytesIO(csv_bytes(lines, columns=COLUMNS)),
        images=io.BytesIO(zip_bytes(PHOTOS)),
        **options,
    )
    job.refresh_from_db()
    return job


def test_variable_simple_grouped_and_external_products_round_trip():
    job = run(shop_file())
    assert (job.format, job.status, job.rows_failed) == ("woocommerce", "done", 0)
    assert (job.rows_processed, job.rows_created, job.rows_updated) == (10, 6, 1)

    tee = Product.objects.get(sku="TEE")
    assert (tee.title, tee.brand, str(tee.category)) == ("Cotton tee", "Acme", "Clothing > Tops")
    assert tee.description == "Soft & light.\n\nOrganic cotton."
    assert tee.attributes == {
        "categories": ["Sale"],
        "tags": ["cotton", "basics"],
        "featured": True,
        "Material": "Cotton",
    }
    assert tee.options == [
        {"name": "Colour", "values": ["Red", "Blue"]},
        {"name": "Size", "values": ["S", "M"]},
    ]
    assert (tee.price, tee.price_max, tee.in_stock) == (Decimal("20"), Decimal("22"), True)
    variants = {v.sku: v for v in tee.variants.all()}
    assert list(variants) == ["TEE-RS", "TEE-RM", "TEE-BS", "TEE-BM"]
    assert variants["TEE-BM"].options == {"Colour": "Blue", "Size": "M"}
    assert variants["TEE-BM"].image.file.read() == PHOTOS["blue.jpg"]
    assert variants["TEE-RS"].stock == 4
    assert [i.file.read() for i in tee.images.all()] == [PHOTOS["red.jpg"], PHOTOS["blue.jpg"]]

    mug = Product.objects.get(sku="MUG")
    assert (mug.price, mug.compare_at_price, mug.in_stock, mug.options) == (
        Decimal("8"),
        Decimal("10"),
        False,
        [],
    )
    assert not mug.variants.exists()
    group = Product.objects.get(sku="woo-30")  # no SKU: its ID is its key
    assert (group.status, group.attributes) == ("draft", {"grouped_products": ["MUG", "TEE"]})
    statuses = dict(Product.objects.values_list("sku", "status"))
    assert (statuses["PLATE"], statuses["BOWL"], statuses["BOOK"]) == ("draft", "draft", "active")
    assert Product.objects.get(sku="BOOK").price == Decimal("1234.50")


def test_reimporting_changes_nothing_and_a_gone_variation_becomes_inactive():
    run(shop_file())
    again = run(shop_file())
    assert (again.rows_created, again.rows_updated, again.rows_failed) == (0, 0, 0)
    assert again.rows_unchanged == 7
    lines = shop_file()
    del lines[5]  # Blue/M is no longer sold
    job = run(lines)
    assert (job.rows_updated, job.rows_unchanged) == (1, 5)
    tee = Product.objects.get(sku="TEE")
    assert list(tee.variants.filter(active=False).values_list("sku", flat=True)) == ["TEE-BM"]
    assert tee.options[1] == {"name": "Size", "values": ["S", "M"]}  # Red/M still sells
    assert tee.variants.count() == 4


def test_bad_lines_are_reported_by_line_and_field_and_the_good_ones_imported():
    lines = [
        variation("Red", "S"),  # line 2: before its parent
        TEE,  # line 3
        variation("Red", "M"),
        variation("Blue", "", SKU="TEE-B"),  # line 5: no size
        variation("Red", "S", **{"Regular price": "abc"}),  # line 6
        {**MUG, "SKU": "CUP", "ID": "70"},  # line 7
        variation("Blue", "S", parent="NOPE"),  # line 8: unknown parent
        {**TEE, "ID": "80", "SKU": "TEE2"},  # line 9: another variable product...
        variation("Red", "M", parent="TEE2"),  # line 10: ...claiming TEE's variation SKU
    ]
    job = run(lines)
    errors = list(job.row_errors.values_list("line", "sku", "field"))
    assert errors == [
        (2, "TEE", "Parent"),
        (5, "TEE", "Attribute 2 value(s)"),
        (6, "TEE", "Regular price"),
        (8, "NOPE", "Parent"),
        (10, "TEE2", "SKU"),
    ]
    assert job.row_errors.get(line=10).message == "'TEE-RM' is also a variant of 'TEE' (line 4)"
    assert set(Product.objects.values_list("sku", flat=True)) == {"TEE", "CUP"}
    assert list(Product.objects.get(sku="TEE").variants.values_list("sku", flat=True)) == ["TEE-RM"]


def test_an_interrupted_import_resumes_after_whole_products():
    def stop(job):
        raise KeyboardInterrupt

    job = ImportJob.objects.create(format="woocommerce", source_name="wc.csv")
    data = csv_bytes(shop_file(), columns=COLUMNS)
    with pytest.raises(KeyboardInterrupt):
        import_job_run(
            job=job,
            source=io.BytesIO(data),
            images=io.BytesIO(zip_bytes(PHOTOS)),
            batch_size=2,
            progress=stop,
        )
    job.refresh_from_db()
    assert (job.resume_line, job.rows_created) == (5, 1)  # the tee and its 3 variations
    import_job_run(
        job=job, source=io.BytesIO(data), images=io.BytesIO(zip_bytes(PHOTOS)), batch_size=2
    )
    job.refresh_from_db()
    assert (job.status, job.rows_processed, job.rows_failed) == ("done", 10, 0)
    assert Product.objects.get(sku="TEE").variants.filter(active=True).count() == 4


def test_the_command_recognises_the_export_by_its_header(tmp_path, capsys):
    data, archive = tmp_path / "wc-product-export-1-1-2025.csv", tmp_path / "photos.zip"
    data.write_bytes(csv_bytes([MUG], columns=COLUMNS))
    archive.write_bytes(zip_bytes(PHOTOS))
    call_command("import_products", str(data), images=str(archive), verbosity=0)
    assert "1 created" in capsys.readouterr().out
    assert ImportJob.objects.get().format == "woocommerce"
    assert Product.objects.get().attributes == {"barcode": "4006381333931"}
