"""The other import formats: TSV of text and base64 images, JSON Lines with image URLs."""

import base64
import ipaddress
import time
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from catalog.importing.images import ImageRefError, _checked_address, _public
from catalog.models import Product, ProductImage
from tests.builders import csv_bytes, jpeg_bytes, jsonl_bytes, zip_bytes

pytestmark = pytest.mark.django_db

RED = jpeg_bytes((220, 20, 20), seed=1)
BLUE = jpeg_bytes((20, 40, 160), seed=2)


def tsv_bytes(pairs, encoding="utf-8", urlsafe=False) -> bytes:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return b"".join(text.encode(encoding) + b"\t" + encode(image) + b"\n" for text, image in pairs)


PAIRS = [("红色条纹T恤", RED), ("蓝色牛仔裤", BLUE), ("蓝色牛仔裤 同款", BLUE)]


def test_tsv_lines_become_products_with_content_hash_skus(run_import):
    job = run_import(tsv_bytes(PAIRS), format="tsv")
    assert (job.status, job.rows_created, job.images_created) == ("done", 3, 3)
    shirt = Product.objects.get(title="红色条纹T恤")
    assert shirt.sku.startswith("TSV-")
    assert len(shirt.sku) == 28
    assert shirt.price == Decimal("0.00")
    assert shirt.images.get().file.read() == RED
    # Two texts of one photo are two products sharing one stored file.
    assert len(set(ProductImage.objects.values_list("file", flat=True))) == 2


def test_gb18030_and_urlsafe_base64_give_the_same_products_as_utf8(run_import):
    run_import(tsv_bytes(PAIRS), format="tsv")
    skus = set(Product.objects.values_list("sku", flat=True))
    again = run_import(tsv_bytes(PAIRS, encoding="gb18030", urlsafe=True), format="tsv")
    assert (again.rows_unchanged, again.rows_created, again.rows_failed) == (3, 0, 0)
    assert set(Product.objects.values_list("sku", flat=True)) == skus


def test_bad_tsv_lines_are_reported_and_the_others_imported(run_import):
    data = (
        tsv_bytes(PAIRS[:1])
        + b"no tab on this line\n"
        + "破损的图片\t".encode()
        + b"!!not base64!!\n"
        + b"\t"
        + base64.b64encode(BLUE)
        + b"\n"
        + "不是图片\t".encode()
        + base64.b64encode(b"plain text")
        + b"\n"
        + b"\xff\xfe\xfd\t"
        + base64.b64encode(BLUE)
        + b"\n"
    )
    job = run_import(data, format="tsv")
    assert (job.rows_created, job.rows_failed) == (1, 5)
    assert list(job.row_errors.values_list("line", "field", "message")) == [
        (2, "", "expected text<TAB>base64 image, found no tab"),
        (3, "image", "image is not valid base64"),
        (4, "title", "is required"),
        (5, "image", "the image: not a JPEG, PNG, WebP or GIF image"),
        (6, "title", "text is neither UTF-8 nor GB18030"),
    ]


def test_tsv_command_refuses_an_images_zip(tmp_path):
    data, archive = tmp_path / "pairs.tsv", tmp_path / "i.zip"
    data.write_bytes(tsv_bytes(PAIRS))
    archive.write_bytes(zip_bytes({"a.jpg": RED}))
    with pytest.raises(CommandError, match="TSV file carries its images in base64"):
        call_command("import_products", str(data), images=str(archive))


def test_jsonl_rows_with_zip_names_and_downloaded_urls(run_import, web_server, settings):
    settings.MAX_UPLOAD_IMAGE_BYTES = 20_000
    web_server.routes.update(
        {
            "/red.jpg": (200, "image/jpeg", RED),
            "/moved.jpg": (302, None, b"/red.jpg"),
            "/page.html": (200, "text/html; charset=utf-8", b"<html>sorry</html>"),
            "/huge.jpg": (200, "image/jpeg", jpeg_bytes(size=400, seed=5)),
        }
    )
    rows = [
        {
            "sku": "J-1",
            "title": "Red shirt",
            "price": 12.5,
            "in_stock": True,
            "category": ["Men", "Shirts"],
            "image": [web_server.url("/red.jpg"), "blue.jpg"],
            "attributes": {"fit": "slim", "titles": {"zh": "红色衬衫"}},
            "sizes": ["S", "M"],
        },
        {"sku": "J-2", "title": "Redirected", "price": "3", "image": web_server.url("/moved.jpg")},
        {"sku": "J-3", "title": "Missing", "price": 3, "image": web_server.url("/gone.jpg")},
        {"sku": "J-4", "title": "A page", "price": 3, "image": web_server.url("/page.html")},
        {"sku": "J-5", "title": "Huge", "price": 3, "image": web_server.url("/huge.jpg")},
        "a list is not a product",
    ]
    data = jsonl_bytes(rows) + b'{"sku": "J-7", "title": \n'
    job = run_import(data, zip_bytes({"blue.jpg": BLUE}), format="jsonl")
    shirt = Product.objects.get(sku="J-1")
    assert (shirt.price, shirt.in_stock, str(shirt.category)) == (
        Decimal("12.50"),
        True,
        "Men > Shirts",
    )
    assert shirt.attributes == {"fit": "slim", "sizes": ["S", "M"], "titles": {"zh": "红色衬衫"}}
    assert [i.file.read() for i in shirt.images.all()] == [RED, BLUE]
    assert Product.objects.get(sku="J-2").images.get().file.name == shirt.images.first().file.name
    errors = list(job.row_errors.values_list("line", "sku", "message"))
    url = web_server.url
    assert errors == [
        (3, "J-3", f"'{url('/gone.jpg')}': download failed: HTTP 404 Not Found"),
        (4, "J-4", f"'{url('/page.html')}': content type text/html, not an image"),
        (
            5,
            "J-5",
            f"'{url('/huge.jpg')}': {len(web_server.routes['/huge.jpg'][2]) / 1e3:.1f} kB, "
            "over the limit of 20.0 kB",
        ),
        (6, "", "expected a JSON object, found str"),
        (7, "", "not valid JSON: Expecting value (column 24)"),
    ]


def test_a_slow_image_server_times_out_without_holding_up_the_import(
    run_import, web_server, settings
):
    settings.IMPORT_URL_TIMEOUT = 0.5
    web_server.routes["/slow.jpg"] = (200, "image/jpeg", RED, 3)
    rows = [
        {"sku": "S-1", "title": "Slow", "price": 1, "image": web_server.url("/slow.jpg")},
        {"sku": "S-2", "title": "No image", "price": 1},
    ]
    job = run_import(jsonl_bytes(rows), format="jsonl")
    assert list(Product.objects.values_list("sku", flat=True)) == ["S-2"]
    assert job.row_errors.get().message.endswith("download timed out after 0.5 s")


def test_image_urls_on_private_addresses_are_refused(run_import, web_server, settings):
    settings.IMPORT_URL_ALLOW_PRIVATE = False  # the default: no server-side request forgery
    web_server.routes["/red.jpg"] = (200, "image/jpeg", RED)
    rows = [{"sku": "P-1", "title": "Internal", "price": 1, "image": web_server.url("/red.jpg")}]
    job = run_import(jsonl_bytes(rows), format="jsonl")
    assert not Product.objects.exists()
    assert job.row_errors.get().message.endswith("': refused: the address is private")


def test_a_refused_host_name_does_not_reveal_its_address(run_import, web_server, settings):
    settings.IMPORT_URL_ALLOW_PRIVATE = False
    url = f"http://localhost:{web_server.server_port}/red.jpg"
    rows = [{"sku": "P-1", "title": "Internal", "price": 1, "image": url}]
    job = run_import(jsonl_bytes(rows), format="jsonl")
    assert job.row_errors.get().message == f"{url!r}: refused: the address is private"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254, the cloud metadata service
        "64:ff9b:1::a00:1",  # local-use NAT64
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::127.0.0.1",  # IPv4-compatible
    ],
)
def test_ipv6_addresses_embedding_a_private_ipv4_are_refused(settings, address):
    settings.IMPORT_URL_ALLOW_PRIVATE = False
    # The check that image_download makes before connecting (so nothing here connects).
    with pytest.raises(ImageRefError, match="^refused: the address is private$"):
        _checked_address(address, 8080)


def test_embedded_public_ipv4_addresses_are_not_refused():
    assert _public(ipaddress.ip_address("64:ff9b::808:808"))  # NAT64 of 8.8.8.8
    assert _public(ipaddress.ip_address("2002:808:808::1"))  # 6to4 of 8.8.8.8
    assert _public(ipaddress.ip_address("2606:4700::1111"))
    assert not _public(ipaddress.ip_address("fd00::1"))


def test_the_timeout_covers_response_headers_sent_slowly(run_import, web_server, settings):
    settings.IMPORT_URL_TIMEOUT = 1.0
    # 63 lines of head, one every 0.2 s: no single read waits long, the whole takes 12.6 s.
    web_server.routes["/drip.jpg"] = (200, "image/jpeg", RED, 0, 0.2)
    rows = [{"sku": "D-1", "title": "Dripping", "price": 1, "image": web_server.url("/drip.jpg")}]
    started = time.monotonic()
    job = run_import(jsonl_bytes(rows), format="jsonl")
    elapsed = time.monotonic() - started
    assert job.row_errors.get().message.endswith("download timed out after 1 s")
    assert not Product.objects.exists()
    assert elapsed < 3.0, f"the download held the import for {elapsed:.1f} s"


def test_a_dripping_server_within_the_timeout_is_downloaded(run_import, web_server, settings):
    settings.IMPORT_URL_TIMEOUT = 10.0
    web_server.routes["/drip.jpg"] = (200, "image/jpeg", RED, 0, 0.01)
    rows = [{"sku": "D-1", "title": "Dripping", "price": 1, "image": web_server.url("/drip.jpg")}]
    job = run_import(jsonl_bytes(rows), format="jsonl")
    assert (job.rows_created, job.rows_failed) == (1, 0)
    assert Product.objects.get().images.get().file.read() == RED


def test_deeply_nested_json_is_a_row_error_and_the_import_goes_on(run_import):
    nested = {"colour": {"shade": {"name": "red"}}}
    recursion_error = b"[" * 100_000 + b"]" * 100_000 + b"\n"  # Python's parser overflows
    too_deep = {"sku": "J-2", "title": "Deep", "price": 1, "attributes": {}}
    inner = too_deep["attributes"]
    for _ in range(64):  # parses, but too deep to walk (store, show) safely
        inner["a"] = inner = {}
    data = (
        jsonl_bytes([{"sku": "J-1", "title": "Mug", "price": 3}])
        + recursion_error
        + jsonl_bytes([too_deep, {"sku": "J-3", "title": "Bowl", "price": 4}])
        + jsonl_bytes([{"sku": "J-4", "title": "Nested", "price": 5, "attributes": nested}])
    )
    job = run_import(data, format="jsonl")
    assert (job.status, job.rows_processed, job.rows_created, job.rows_failed) == ("done", 5, 3, 2)
    assert list(job.row_errors.values_list("line", "field", "message")) == [
        (2, "", "JSON nested deeper than 64 levels"),
        (3, "", "JSON nested deeper than 64 levels"),
    ]
    assert Product.objects.get(sku="J-4").attributes == nested


def test_deeply_nested_json_in_a_csv_attributes_cell_is_a_row_error(run_import):
    rows = [
        {"sku": "C-1", "title": "Deep", "price": "1", "attributes": "[" * 50_000 + "]" * 50_000},
        {"sku": "C-2", "title": "Flat", "price": "2", "attributes": '{"colour": "red"}'},
    ]
    job = run_import(csv_bytes(rows))
    assert (job.status, job.rows_created) == ("done", 1)
    assert list(job.row_errors.values_list("line", "field", "message")) == [
        (2, "attributes", "JSON nested deeper than 64 levels"),
    ]
    assert Product.objects.get(sku="C-2").attributes == {"colour": "red"}
