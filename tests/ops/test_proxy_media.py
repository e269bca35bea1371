"""docker/nginx.conf run by a real nginx: /media/ serves product photos and nothing else.

Only the addresses change (the app upstream, the listening port, the volume folders); every
location rule is the file's own.
"""

import http.client
import http.server
import os
import shutil
import subprocess
import threading

import pytest
import yaml

from tests.ops.topology import ROOT, free_port, wait_until

SCRIPT = b"<html><script>alert(document.cookie)</script></html>"


def nginx_executable() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    assert found, "nginx is missing: ./bin/test installs Debian's package"
    return found


@pytest.fixture
def app_upstream():
    """Stands in for gunicorn: answers every request with its path."""

    class App(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"app saw {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def proxy_config(folder, *, port: int, upstream: int) -> str:
    site = (ROOT / "docker" / "nginx.conf").read_text()
    for old, new in [
        ("server web:8000;", f"server 127.0.0.1:{upstream};"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("/var/lib/shop/", f"{folder}/"),
        # What the nginx image's envsubst fills in (tests/ops/test_proxy.py tests that part).
        ("${TLS_PROXY_ADDRESS}", "127.0.0.1"),
        ("/var/log/nginx/access.log", f"{folder}/access.log"),
    ]:
        assert old in site, old
        site = site.replace(old, new)
    temp = " ".join(
        f"{kind}_temp_path {folder}/tmp-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # What the nginx image's own nginx.conf wraps around conf.d/default.conf.
    return f"""
        {"user root;" if os.geteuid() == 0 else ""}
        daemon off;
        worker_processes 1;
        pid {folder}/nginx.pid;
        error_log {folder}/error.log warn;
        events {{ worker_connections 64; }}
        http {{
            include /etc/nginx/mime.types;
            default_type application/octet-stream;
            access_log off;
            {temp}
            {site}
        }}
    """


@pytest.fixture
def proxy(tmp_path, app_upstream):
    media = tmp_path / "media"
    files = {
        "products/sha256/ab/photo.jpg": b"\xff\xd8\xff jpeg",
        "products/sha256/ab/PHOTO.JPG": b"\xff\xd8\xff jpeg",
        "products/sha256/cd/photo.png": b"\x89PNG png",
        "products/sha256/cd/photo.webp": b"RIFF webp",
        "products/sha256/cd/photo.gif": b"GIF89a gif",
        "products/sha256/ef/polyglot.jpg": SCRIPT,  # HTML in a photo's clothes
        "products/sha256/ef/evil.html": SCRIPT,
        "products/sha256/ef/evil.svg": b"<svg onload='alert(1)'/>",
        "products/sha256/ef/photo.jpg.html": SCRIPT,
        "imports/2026/12/evil.html": SCRIPT,  # an upload kept here by an older version
        "imports/2026/12/evil.jpg": SCRIPT,
        "evil.jpg": SCRIPT,
    }
    for name, data in files.items():
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        (media / name).write_bytes(data)
    (tmp_path / "static").mkdir()
    config = tmp_path / "nginx.conf"
    port = free_port()
    config.write_text(proxy_config(tmp_path, port=port, upstream=app_upstream))
    nginx = nginx_executable()
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(config)])
    try:

        def get(path: str):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                return response, response.read()
            finally:
                connection.close()

        def accepting():
            try:
                return get("/healthz")
            except OSError:
                return None

        wait_until(accepting, timeout=30, what="nginx to accept connections")
        yield get
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/media/products/sha256/ab/photo.jpg", "image/jpeg"),
        ("/media/products/sha256/ab/PHOTO.JPG", "image/jpeg"),
        ("/media/products/sha256/cd/photo.png", "image/png"),
        ("/media/products/sha256/cd/photo.webp", "image/webp"),
        ("/media/products/sha256/cd/photo.gif", "image/gif"),
        # Bytes of a page behind a photo's name are still a photo to the browser: no sniffing.
        ("/media/products/sha256/ef/polyglot.jpg", "image/jpeg"),
    ],
)
def test_product_photos_are_served_with_their_image_type(proxy, path, content_type):
    response, _ = proxy(path)
    assert response.status == 200
    assert response.getheader("Content-Type") == content_type
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert "sandbox" in response.getheader("Content-Security-Policy")


@pytest.mark.parametrize(
    "path",
    [
        "/media/imports/2026/12/evil.html",
        "/media/imports/2026/12/evil.jpg",
        "/media/products/sha256/ef/evil.html",
        "/media/products/sha256/ef/evil.svg",
        "/media/products/sha256/ef/photo.jpg.html",
        "/media/products/../imports/2026/12/evil.html",
        "/media/products/%2e%2e/imports/2026/12/evil.jpg",
        "/media/evil.jpg",
        "/media/",
    ],
)
def test_nothing_else_under_media_is_served(proxy, path):
    response, body = proxy(path)
    assert response.status in (400, 404), (response.status, body)
    assert b"<script>" not in body
    assert b"app saw" not in body  # not handed to the app either


def test_everything_else_still_reaches_the_app(proxy):
    response, body = proxy("/api/search/?q=mug")
    assert (response.status, body) == (200, b"app saw /api/search/?q=mug")


def test_import_uploads_live_in_a_volume_the_proxy_never_mounts():
    config = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = config["services"]

    def mounts(name):
        return {volume.split(":")[0] for volume in services[name].get("volumes", [])}

    assert "private" in config["volumes"]
    # web writes them, the worker reads them, migrate moves old ones out of media.
    assert {"private", "media"} <= mounts("web") & mounts("worker") & mounts("migrate")
    assert "private" not in mounts("proxy")
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "SHOP_PRIVATE_ROOT=/var/lib/shop/private" in dockerfile
