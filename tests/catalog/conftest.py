"""Builders of import files: CSV, ZIP, TSV, JSON Lines, hostile images, a local web server."""

import csv
import http.server
import io
import json
import struct
import threading
import time
import zipfile
import zlib

import pytest

from catalog.importing.services import import_job_run
from catalog.models import ImportJob


def csv_bytes(rows: list[dict], columns=None, bom=False) -> bytes:
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return ("\ufeff" if bom else "").encode() + text.getvalue().encode("utf-8")


def zip_bytes(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def jsonl_bytes(rows: list) -> bytes:
    return b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)


def png_bomb(width: int, height: int) -> bytes:
    """A valid, tiny PNG of a huge black 1-bit image: decoding it would need gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.fixture
def run_import(db):
    """Run an import job on in-memory files, as the task or the command would."""

    def run(data: bytes, images: bytes | None = None, format="csv", dry_run=False, **options):
        job = ImportJob.objects.create(format=format, dry_run=dry_run, source_name=f"t.{format}")
        import_job_run(
            job=job,
            source=io.BytesIO(data),
            images=io.BytesIO(images) if images is not None else None,
            **options,
        )
        job.refresh_from_db()
        return job

    return run


@pytest.fixture
def web_server(settings):
    """A local HTTP server: path -> (status, content type, body[, seconds to wait first])."""
    settings.IMPORT_URL_ALLOW_PRIVATE = True  # it listens on 127.0.0.1
    routes: dict[str, tuple] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, content_type, body, *delay = routes.get(
                self.path, (404, "text/plain", b"not found")
            )
            if delay:
                time.sleep(delay[0])
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            if status in (301, 302):
                self.send_header("Location", body.decode())
                body = b""
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (size limit or timeout), as it should

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.routes = routes
    server.url = lambda path: f"http://127.0.0.1:{server.server_port}{path}"
    yield server
    server.shutdown()
    server.server_close()
