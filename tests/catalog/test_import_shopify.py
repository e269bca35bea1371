"""Shopify's product CSV export: one Handle's lines are one product with its variants."""

import io
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from catalog.importing.run import import_job_run
from catalog.models import ImportJob, Product, ProductVariant
from tests.builders import csv_bytes, jpeg_bytes, zip_bytes

pytestmark = pytest.mark.django_db

# Every column of Shopify's export, in its order (help.shopify.com, "Using CSV files").
COLUMNS = [
    "Handle", "Title", "Body (HTML)", "Vendor", "Product Category", "Type", "Tags",
    "Published", "Option1 Name", "Option1 Value", "Option1 Linked To", "Option2 Name",
    "Option2 Value", "Option2 Linked To", "Option3 Name", "Option3 Value",
    "Option3 Linked To", "Variant SKU", "Variant Grams", "Variant Inventory Tracker",
    "Variant Inventory Qty", "Variant Inventory Policy", "Variant Fulfillment Service",
    "Variant Price", "Variant Compare At Price", "Variant Requires Shipping",
    "Variant Taxable", "Variant Barcode", "Image Src", "Image Position", "Image Alt Text",
    "Gift Card", "SEO Title", "SEO Description", "Google Shopping / Google Product Category",
    "Google Shopping / Gender", "Google Shopping / Age Group", "Google Shopping / MPN",
    "Google Shopping / Condition", "Google Shopping / Custom Product",
    "Google Shopping / Custom Label 0", "Google Shopping / Custom Label 1",
    "Google Shopping / Custom Label 2", "Google Shopping / Custom Label 3",
    "Google Shopping / Custom Label 4", "Color (product.metafields.shopify.color-pattern)",
    "Fabric (product.metafields.custom.fabric)", "Variant Image", "Variant Weight Unit",
    "Variant Tax Code", "Cost per item", "Included / United States",
    "Price / United States", "Compare At Price / United States", "Status",
]  # fmt: skip
COLOURS = {"Red": (220, 20, 20), "Blue": (20, 40, 160), "Green": (20, 160, 40)}
PHOTOS = {f"{c.lower()}.jpg": jpeg_bytes(rgb, seed=n) for n, (c, rgb) in enumerate(COLOURS.items())}
DESCRIPTION = (
    "<p>Light &amp; airy <strong>linen</strong>.</p><script>alert('x')</script>"
    "<style>p{color:red}</style><ul><li>Machine wash</li></ul>"
)


def variant(handle, colour, size, **extra):
    return {
        "Handle": handle,
        "Option1 Value": colour,
        "Option2 Value": size,
        "Variant SKU": f"DR-{colour[0]}{size}",
        "Variant Grams": "300",
        "Variant Inventory Tracker": "shopify",
        "Variant Inventory Qty": "0" if size == "L" else "5",
        "Variant Inventory Policy": "continue" if colour == "Green" else "deny",
        "Variant Fulfillment Service": "manual",
        "Variant Price": "49.00" if size != "L" else "54.00",
        "Variant Compare At Price": "59.00",
        "Variant Requires Shipping": "true",
        "Variant Taxable": "true",
        "Variant Barcode": f"0001{colour[0]}{size}",
        "Variant Image": f"{colour.lower()}.jpg",
        "Variant Weight Unit": "kg",
        **extra,
    }


def dress_lines(colours=("Red", "Blue", "Green"), sizes=("S", "L")):
    lines = [variant("linen-dress", c, s) for c in colours for s in sizes]
    lines[0].update(
        {
            "Title": "Linen dress",
            "Body (HTML)": DESCRIPTION,
            "Vendor": "Acme",
            "Product Category": "Apparel & Accessories > Clothing > Dresses",
            "Type": "Dress",
            "Tags": "summer, linen,  midi",
            "Published": "true",
            "Option1 Name": "Colour",
            "Option2 Name": "Size",
            "Gift Card": "false",
            "SEO Title": "Linen summer dress",
            "Google Shopping / Gender": "female",
            "Google Shopping / Custom Product": "FALSE",
            "Color (product.metafields.shopify.color-pattern)": "gid://shopify/Metaobject/1",
            "Fabric (product.metafields.custom.fabric)": "linen",
            "Price / United States": "55.00",
            "Status": "active",
        }
    )
    # Image Position orders the photos, not the lines they are on.
    photos = [("blue.jpg", 2), ("red.jpg", 1), ("green.jpg", 3)]
    for line, (name, position) in zip(lines, photos, strict=False):
        line.update({"Image Src": name, "Image Position": str(position)})
    return lines


def simple(handle, title, **extra):
    return {
        "Handle": handle,
        "Title": title,
        "Vendor": "Acme",
        "Type": "Kitchen",
        "Published": "true",
        "Option1 Name": "Title",
        "Option1 Value": "Default Title",
        "Variant SKU": f"{handle.upper()}-1",
        "Variant Inventory Tracker": "shopify",
        "Variant Inventory Qty": "3",
        "Variant Inventory Policy": "deny",
        "Variant Price": "8.50",
        "Status": "active",
        **extra,
    }


def shopify_csv(lines) -> bytes:
    return csv_bytes(lines, columns=COLUMNS)


def catalog_file():
    return [
        *dress_lines(),
        simple("mug", "Stoneware mug"),
        simple("hat", "Straw hat", Status="draft"),
        simple("scarf", "Old scarf", Status="archived", **{"Variant Inventory Qty": "0"}),
        simple("bowl", "Bowl", Published="false"),
    ]


def run(data: bytes, images: bytes | None = None, **options) -> ImportJob:
    # As the command and the API do: the job says CSV, the header says Shopify.
    job = ImportJob.objects.create(format="csv", source_name="products_export.csv")
    import_job_run(
        job=job,
        source=io.BytesIO(data),
        images=io.BytesIO(images) if images is not None else None,
        **options,
    )
    job.refresh_from_db()
    return job


def test_a_multi_variant_product_round_trips_with_its_photos(embed_on_commit):
    with embed_on_commit():
        job = run(shopify_csv(catalog_file()), zip_bytes(PHOTOS))
    assert (job.format, job.status, job.rows_processed) == ("shopify", "done", 10)
    assert (job.rows_created, job.rows_failed, job.images_created) == (5, 0, 3)

    dress = Product.objects.get(sku="linen-dress")
    assert (dress.title, dress.brand, str(dress.category)) == (
        "Linen dress",
        "Acme",
        "Apparel & Accessories > Clothing > Dresses",
    )
    assert dress.description == "Light & airy linen.\nMachine wash"
    assert dress.status == "active"
    assert dress.attributes == {
        "tags": ["summer", "linen", "midi"],
        "type": "Dress",
        "seo_title": "Linen summer dress",
        "gender": "female",
        "fabric": "linen",
    }
    assert dress.options == [
        {"name": "Colour", "values": ["Red", "Blue", "Green"]},
        {"name": "Size", "values": ["S", "L"]},
    ]
    # The cheapest sellable variant, the dearest, and the struck-through price.
    assert (dress.price, dress.price_max, dress.compare_at_price, dress.in_stock) == (
        Decimal("49.00"),
        Decimal("54.00"),
        Decimal("59.00"),
        True,
    )
    images = list(dress.images.all())
    assert [image.file.read() for image in images] == [
        PHOTOS["red.jpg"],
        PHOTOS["blue.jpg"],
        PHOTOS["green.jpg"],
    ]
    variants = list(dress.variants.all())
    assert [(v.sku, v.options, v.position) for v in variants[:2]] == [
        ("DR-RS", {"Colour": "Red", "Size": "S"}, 0),
        ("DR-RL", {"Colour": "Red", "Size": "L"}, 1),
    ]
    assert {v.sku: v.image.file.read() == PHOTOS[f"{v.options['Colour'].lower()}.jpg"]
            for v in variants} == dict.fromkeys([v.sku for v in variants], True)  # fmt: skip
    red_large = dress.variants.get(sku="DR-RL")
    assert (red_large.price, red_large.stock, red_large.in_stock, red_large.barcode) == (
        Decimal("54.00"),
        0,
        False,
        "0001RL",
    )
    # "continue": sold when out of stock.
    assert dress.variants.get(sku="DR-GL").in_stock is True


def test_a_product_without_options_has_no_variants_and_its_own_price(embed_on_commit):
    with embed_on_commit():
        run(shopify_csv(catalog_file()), zip_bytes(PHOTOS))
    mug = Product.objects.get(sku="mug")
    assert not mug.variants.exists()
    assert (mug.price, mug.in_stock, mug.options, str(mug.category)) == (
        Decimal("8.50"),
        True,
        [],
        "Kitchen",
    )
    assert mug.attributes == {"variant_sku": "MUG-1"}
    statuses = dict(Product.objects.values_list("sku", "status"))
    assert statuses == {
        "linen-dress": "active",
        "mug": "active",
        "hat": "draft",
        "scarf": "archived",
        "bowl": "draft",  # unpublished
    }
    assert Product.objects.get(sku="scarf").in_stock is False


def test_reimporting_the_same_file_changes_nothing(embed_on_commit):
    data, photos = shopify_csv(catalog_file()), zip_bytes(PHOTOS)
    with embed_on_commit():
        run(data, photos)
    before = {v.sku: v.updated for v in ProductVariant.objects.all()}
    again = run(data, photos)
    assert (again.rows_created, again.rows_updated, again.rows_unchanged) == (0, 0, 5)
    assert (again.rows_failed, again.images_created) == (0, 0)
    assert {v.sku: v.updated for v in ProductVariant.objects.all()} == before


def test_a_variant_gone_from_the_file_becomes_inactive_and_comes_back(embed_on_commit):
    with embed_on_commit():
        run(shopify_csv(dress_lines()), zip_bytes(PHOTOS))
        job = run(shopify_csv(dress_lines(colours=("Red", "Blue"))), zip_bytes(PHOTOS))
    assert (job.rows_updated, job.rows_failed) == (1, 0)
    dress = Product.objects.get()
    assert dress.variants.count() == 6  # kept, for the orders and logs that name them
    assert set(dress.variants.filter(active=False).values_list("sku", flat=True)) == {
        "DR-GS",
        "DR-GL",
    }
    assert dress.options[0] == {"name": "Colour", "values": ["Red", "Blue"]}
    run(shopify_csv(dress_lines()), zip_bytes(PHOTOS))
    assert not Product.objects.get().variants.filter(active=False).exists()


def test_bad_lines_are_reported_by_line_and_field_and_the_good_ones_imported(embed_on_commit):
    lines = [
        {"Handle": "orphan", "Option1 Value": "S", "Variant Price": "5"},  # line 2
        *dress_lines(sizes=("S",)),  # lines 3-5
        simple("cup", "Cup", **{"Variant Price": "1.234,50"}),  # line 6: European price
        simple(
            "plate",
            "Plate",
            **{"Option1 Name": "Size", "Option1 Value": "One", "Variant SKU": "DR-RS"},
        ),  # line 7: the dress's SKU
        {  # line 8: a fourth option
            **simple("four", "Four options", **{"Option1 Name": "A", "Option1 Value": "1"}),
            "Option4 Name": "D",
            "Option4 Value": "x",
        },
    ]
    lines[2]["Option2 Value"] = ""  # line 4: Blue has no size
    job = run(
        csv_bytes(lines, columns=[*COLUMNS, "Option4 Name", "Option4 Value"]), zip_bytes(PHOTOS)
    )
    errors = list(job.row_errors.values_list("line", "sku", "field"))
    assert errors == [
        (2, "orphan", "Title"),
        (4, "linen-dress", "Option2 Value"),
        (7, "plate", "Variant SKU"),
        (8, "four", "Option4 Name"),
    ]
    messages = [e.message for e in job.row_errors.all()]
    assert "continues product 'orphan'" in messages[0]
    assert messages[2] == "'DR-RS' is also a variant of 'linen-dress' (line 3)"
    # A new product whose every variant is refused is not created.
    assert set(Product.objects.values_list("sku", flat=True)) == {"linen-dress", "cup"}
    assert Product.objects.get(sku="cup").price == Decimal("1234.50")
    dress = Product.objects.get(sku="linen-dress")
    assert sorted(dress.variants.values_list("sku", flat=True)) == ["DR-GS", "DR-RS"]
    # A SKU another product has in the catalog is refused the same way.
    again = run(
        shopify_csv([simple("tray", "Tray", **{"Option1 Name": "Size", "Variant SKU": "DR-GS"})])
    )
    assert list(again.row_errors.values_list("line", "field", "message")) == [
        (2, "Variant SKU", "'DR-GS' is already a variant of product 'linen-dress'")
    ]


def test_an_interrupted_import_never_splits_a_product_and_resumes(embed_on_commit):
    lines = catalog_file()  # the dress spans lines 2-7

    def stop(job):
        raise KeyboardInterrupt

    job = ImportJob.objects.create(format="shopify", source_name="products_export.csv")
    with pytest.raises(KeyboardInterrupt):
        import_job_run(
            job=job,
            source=io.BytesIO(shopify_csv(lines)),
            images=io.BytesIO(zip_bytes(PHOTOS)),
            batch_size=4,
            progress=stop,
        )
    job.refresh_from_db()
    # The batch grew to the end of the dress's lines rather than cut it.
    assert (job.resume_line, job.rows_processed, job.rows_created) == (7, 6, 1)
    assert Product.objects.get().variants.count() == 6
    if True:
        import_job_run(
            job=job,
            source=io.BytesIO(shopify_csv(lines)),
            images=io.BytesIO(zip_bytes(PHOTOS)),
            batch_size=4,
        )
    job.refresh_from_db()
    assert (job.status, job.rows_processed, job.rows_created, job.rows_failed) == (
        "done",
        10,
        5,
        0,
    )


def test_the_command_and_the_api_recognise_the_export_by_its_header(
    tmp_path, admin_client, embed_on_commit, capsys
):
    data = tmp_path / "products_export_1.csv"
    data.write_bytes(shopify_csv([simple("mug", "Stoneware mug")]))
    with embed_on_commit():
        call_command("import_products", str(data))
    assert "1 created" in capsys.readouterr().out
    assert ImportJob.objects.get().format == "shopify"

    upload = SimpleUploadedFile("export.csv", shopify_csv([simple("mug", "Big mug")]))
    with embed_on_commit():
        response = admin_client.post(reverse("api-imports"), {"file": upload})
    assert response.status_code == 202, response.content
    body = admin_client.get(reverse("api-import-detail", args=[response.json()["id"]])).json()
    assert (body["format"], body["status"], body["rows"]["updated"]) == ("shopify", "done", 1)
    assert Product.objects.get().title == "Big mug"
