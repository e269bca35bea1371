"""Every command and URL in the README runs against the app, on the demo catalog.

- The tour's `curl` examples: requested as written (the test client in place of curl,
  a demo product photo as `photo.jpg`, a demo product's id in place of 1).
- Every page and endpoint the README names: requested for real, with what it needs.
- Its commands: `./bin/demo` is `manage.py run_demo` (tests/search/test_run_demo.py runs
  it); `./bin/test` is what CI runs; each `manage.py` command it names is run by a test
  (checked below).
"""

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from catalog.models import Product, ProductImage
from catalog.services import demo_catalog_load
from tests.builders import csv_bytes

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def readme_sh_lines() -> list[str]:
    return [line for block in SH_BLOCK.findall(README) for line in block.splitlines() if line]


@pytest.fixture
def demo_shop(db, embed_on_commit):
    with embed_on_commit():
        demo_catalog_load(count=192, seed=0)  # each (colour, category) once, embedded
    product = Product.objects.filter(images__isnull=False).order_by("pk").first()
    return product, ProductImage.objects.filter(product=product).first().file.read()


def curl(client, line: str, product: Product, photo: bytes):
    """A README `curl` line through the test client."""
    args = shlex.split(line)[1:]
    url = next(arg for arg in args if arg.startswith("http"))
    fields = [value for flag, value in zip(args, args[1:], strict=False) if flag == "-F"]
    parts = urlsplit(url)
    path = re.sub(r"/products/1/", f"/products/{product.pk}/", parts.path)
    if not fields:
        return client.get(f"{path}?{parts.query}")
    form = {}
    for field in fields:
        name, value = field.split("=", 1)
        form[name] = (
            SimpleUploadedFile("photo.jpg", photo, "image/jpeg") if value[0] == "@" else value
        )
    return client.post(path, form)


def test_the_tour_s_curl_examples_answer_on_the_demo_catalog(client, demo_shop):
    product, photo = demo_shop
    lines = [line for line in readme_sh_lines() if line.startswith("curl ")]
    assert len(lines) >= 4
    for line in lines:
        response = curl(client, line, product, photo)
        assert response.status_code == 200, (line, response.content[:300])
        body = response.json()
        assert body.get("results") or body.get("suggestions") or body.get("answer"), (line, body)


def test_the_tour_s_queries_find_products_in_the_shop(client, demo_shop):
    tour = README.split("## A five-minute tour")[1].split("\n## ")[0]
    tried = tour.split("In the shop, try:")[1].split("\n\nThe admin")[0]
    queries = [q for q in re.findall(r"`([^`]+)`", tried) if not q.startswith("/")]
    assert len(queries) >= 4
    for query in queries:
        response = client.get("/", {"q": query})
        assert response.status_code == 200
        assert response.context["matches"], query


def test_the_schema_check_the_readme_names_passes(tmp_path):
    call_command("spectacular", validate=True, fail_on_warn=True, file=str(tmp_path / "s.yaml"))
    assert "openapi:" in (tmp_path / "s.yaml").read_text()


def test_the_readme_s_commands_are_the_ones_the_tests_run():
    commands = {line.split()[0] for line in readme_sh_lines() if not line.startswith("curl ")}
    assert commands == {"./bin/demo", "./bin/test"}
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    for name in set(re.findall(r"manage\.py ([a-z_]+)", README)) | {"run_demo"}:
        # Run through call_command, or as a process (["manage.py", NAME, ...]).
        assert f'"{name}"' in tests, f"no test runs manage.py {name}"


def test_every_page_and_endpoint_the_readme_names_answers(client, admin_client, demo_shop):
    product, photo = demo_shop

    def image():
        return SimpleUploadedFile("photo.jpg", photo, "image/jpeg")

    imported = admin_client.post(
        "/api/imports/",
        {"file": SimpleUploadedFile("shop.csv", csv_bytes([{"sku": "R-1", "title": "Red mug",
                                                             "price": "9.50"}]), "text/csv")},
    )  # fmt: skip
    assert imported.status_code == 202, imported.content
    job = imported.json()["id"]
    search = client.get("/api/search/", {"q": "red dress", "session": "tour"}).json()
    answers = {
        "/": client.get("/", {"q": "red dress"}),
        "/products/<id>/": client.get(f"/products/{product.pk}/"),
        "/api/search/": client.get("/api/search/", {"q": "red dress", "attr.size": "M"}),
        "/api/suggest/": client.get("/api/suggest/", {"q": "red"}),
        "/api/search/image/": client.post("/api/search/image/", {"image": image()}),
        "/api/products/<id>/similar/": client.get(f"/api/products/{product.pk}/similar/"),
        "/api/match/": client.post("/api/match/", {"image": image(), "text": product.title}),
        "/api/captions/": client.post("/api/captions/", {"image": image(), "limit": 3}),
        "/api/ask/": client.post("/api/ask/", {"product_id": product.pk, "question": "颜色?"}),
        "/api/events/": client.post(
            "/api/events/",
            {
                "search_id": search["search_id"],
                "type": "click",
                "product_id": search["results"][0]["id"],
                "position": 1,
                "session": "tour",
            },
            content_type="application/json",
        ),
        "/api/imports/": imported,
        "/api/imports/<id>/": admin_client.get(f"/api/imports/{job}/"),
        "/api/imports/<id>/report/": admin_client.get(f"/api/imports/{job}/report/"),
        "/api/schema/": client.get("/api/schema/"),
        "/api/docs/": client.get("/api/docs/"),
        "/admin/catalog/importjob/add/": admin_client.get("/admin/catalog/importjob/add/"),
        "/admin/": admin_client.get("/admin/"),
    }
    named = set(re.findall(r"`(?:GET |POST )?(/[a-z][^`\s?]*)", README))
    named |= {urlsplit(url).path for url in re.findall(r"<(http://localhost:8000/[^>]*)>", README)}
    assert named <= answers.keys(), f"the README names {named - answers.keys()}: request it here"
    for path, response in answers.items():
        assert 200 <= response.status_code < 300, (path, response.status_code)
