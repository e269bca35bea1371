"""docker/nginx.conf in front of the production web process, both real: whose forwarded
headers are believed, what a client's connections and large uploads are allowed, how long
a query a GET can carry, what the access logs keep."""

import http.client
import json
import re
import runpy
import socket
import time
from urllib.parse import urlencode

import pytest

from tests.ops.topology import ROOT, NginxProxy, wait_until

TLS_PROXY = "127.0.0.2"  # the TLS-terminating proxy in front, as nginx is told (loopback)
CLIENT = "127.0.0.1"  # anyone else


def request(port, path, *, source=CLIENT, method="GET", headers=None, body=None):
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=(source, 0)
    )
    try:
        connection.request(
            method, path, body=body, headers={"Host": "localhost", **(headers or {})}
        )
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


@pytest.fixture
def proxy(topology, ops_workdir, request):
    def start(**web_env) -> NginxProxy:
        web = topology.start_web(API_NUM_PROXIES="1", **web_env)  # as in docker/compose.yaml
        nginx = NginxProxy(
            ops_workdir / f"nginx-{request.node.name[:30]}",
            upstream_port=web.port,
            tls_proxy_address=TLS_PROXY,
        )
        nginx.start()
        request.addfinalizer(nginx.stop)
        nginx.web = web
        return nginx

    return start


def test_only_the_tls_proxys_forwarded_headers_are_believed(proxy, topology):
    nginx = proxy(
        DJANGO_SECURE_SSL_REDIRECT="1",
        API_ANON_RATE="3/min",
        CACHE_URL=topology.redis.url(3),
    )
    search = "/api/search/?q=shirt"
    # A client claiming https over plain HTTP is not believed: it is sent to https.
    status, headers, _ = request(nginx.port, search, headers={"X-Forwarded-Proto": "https"})
    assert status == 301
    assert headers["Location"] == f"https://localhost{search}"

    # The TLS proxy's word is taken: https, with a year of HSTS and the CSP.
    def via_tls_proxy(client_address, spoofed="10.1.1.1"):
        # A client's own X-Forwarded-For comes first; the TLS proxy appends the address it saw.
        forwarded = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": f"{spoofed}, {client_address}",
        }
        return request(nginx.port, search, source=TLS_PROXY, headers=forwarded)

    status, headers, _ = via_tls_proxy("203.0.113.60")
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert "script-src 'self'" in headers["Content-Security-Policy"]

    # Throttled by the address the TLS proxy saw; what the client wrote before it is ignored.
    statuses = [via_tls_proxy("203.0.113.60", spoofed=f"10.1.1.{n}")[0] for n in range(3)]
    assert statuses == [200, 200, 429]
    assert via_tls_proxy("203.0.113.61")[0] == 200  # another shopper, another budget


def held_upload(port: int, path: str, content_length: int, sent: bytes) -> socket.socket:
    """A POST whose headers and first bytes are sent, the rest never: an upload in progress."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    token = "a" * 16 + "B" * 16
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {content_length}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Cookie: csrftoken={token}\r\nX-CSRFToken: {token}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(65536)
        if not chunk:
            break
        response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_uploads_through_the_proxy(proxy):
    nginx = proxy()
    # An anonymous 30 MB import is answered at once, from its headers: the body never comes.
    started = time.monotonic()
    sock = held_upload(nginx.port, "/admin/catalog/importjob/add/", 30_000_000, b"--b\r\n" * 100)
    try:
        status, body = read_status(sock)
    finally:
        sock.close()
    assert status == 413
    assert time.monotonic() - started < 10  # not after client_body_timeout: nothing waited
    sock = held_upload(nginx.port, "/api/imports/", 30_000_000, b"")
    try:
        status, body = read_status(sock)
    finally:
        sock.close()
    assert status == 413

    # Two uploads at a time per client address; a third is refused while they go on.
    held = [held_upload(nginx.port, "/api/imports/", 5_000, b"--b\r\n") for _ in range(2)]
    try:
        time.sleep(0.5)  # both are being read by now
        status, _, body = request(nginx.port, "/api/imports/", method="POST", body=b"x")
        assert status == 429
        # Browsing is not an upload: the shop answers meanwhile.
        assert request(nginx.port, "/healthz")[0] == 200
    finally:
        for sock in held:
            sock.close()


# --- how long a query a GET can carry ------------------------------------------------------


def longest_search(character: str, **params) -> str:
    """GET /api/search/ with a query of 500 `character`s, every filter at its longest (a
    Chinese brand of 120 characters, a 200-character category slug) and a session of 128
    characters that all need percent-encoding."""
    params = {
        "q": character * 500,
        "category": "c" * 200,
        "brand": "品" * 120,
        "min_price": "0.01",
        "max_price": "99999999.99",
        "in_stock": "true",
        "sort": "price_asc",
        "limit": "100",
        "offset": "10000",
        "correct": "false",
        "understand": "false",
        "session": "%" * 128,
        **params,
    }
    return "/api/search/?" + urlencode({k: v for k, v in params.items() if v is not None})


@pytest.mark.parametrize("character", ["红", "𠀀"])  # 3 and 4 bytes in UTF-8
def test_the_request_line_of_a_500_character_query_fits_the_configured_limits(character):
    line = f"GET {longest_search(character)} HTTP/1.1"
    assert len(line.encode()) > 4094  # gunicorn's default would answer 414
    # gunicorn reads a request line of up to limit_request_line bytes (at most 8190)...
    limit = runpy.run_path(str(ROOT / "docker" / "gunicorn.conf.py"))["limit_request_line"]
    assert 0 < limit <= 8190
    assert len(line.encode()) <= limit
    # ...and nginx one that fits a buffer of large_client_header_buffers, with its CRLF.
    site = (ROOT / "docker" / "nginx.conf").read_text()
    size = int(re.search(r"large_client_header_buffers \d+ (\d+)k;", site).group(1))
    assert len(line.encode()) + 2 <= size * 1024


def test_a_500_character_chinese_query_goes_through_the_proxy(proxy):
    nginx = proxy()
    url = longest_search("红", category=None)  # an empty shop has no category
    assert len(f"GET {url} HTTP/1.1") > 4094
    status, _, body = request(nginx.port, url)
    assert status == 200, body[:300]
    assert json.loads(body)["count"] == 0  # an empty shop: answered, not refused
    page = "/?" + urlencode({"q": "红" * 500, "brand": "品" * 120, "sort": "price_asc"})
    assert request(nginx.port, page)[0] == 200


# --- access logs ---------------------------------------------------------------------------


def test_access_logs_keep_no_session_value(proxy):
    nginx = proxy()
    secret = "visit-7f3a-secret"
    for path in (
        f"/api/search/?q=shirt&session={secret}",
        f"/api/search/?session={secret}&q=shirt&session={secret}2",
    ):
        status, _, body = request(nginx.port, path, headers={"Referer": f"/?session={secret}"})
        assert status == 200, body[:300]

    def logged() -> tuple[str, str] | None:
        lines = nginx.access_log.read_text() if nginx.access_log.exists() else ""
        return lines.count("/api/search/") == 2 and (lines, nginx.web.process.output(10**7))

    nginx_log, gunicorn_log = wait_until(logged, timeout=10, what="both requests logged")
    assert secret not in nginx_log, nginx_log
    assert "/api/search/?q=shirt&session=redacted " in nginx_log
    assert "/api/search/ " in nginx_log  # two sessions: the path alone
    assert secret not in gunicorn_log
    access = [
        entry
        for entry in map(json.loads, gunicorn_log.splitlines())
        if entry["logger"] == "gunicorn.access" and "/api/search/" in entry["request"]
    ]
    assert [entry["request"] for entry in access] == [
        "GET /api/search/?q=shirt&session=redacted HTTP/1.1",
        "GET /api/search/?session=redacted&q=shirt&session=redacted HTTP/1.1",
    ]
