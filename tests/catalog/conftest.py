"""Import fixtures: a job run on in-memory files, a local web server (files: tests/builders.py)."""

import contextlib
import http.server
import io
import threading
import time

import pytest

from catalog.importing.run import import_job_run
from catalog.models import ImportJob


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
    """A local HTTP server: path -> (status, content type, body[, seconds to wait first
    [, seconds between the lines of the response's head]]): a slow server, or a dripping one."""
    settings.IMPORT_URL_ALLOW_PRIVATE = True  # it listens on 127.0.0.1
    routes: dict[str, tuple] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, content_type, body, *delays = routes.get(
                self.path, (404, "text/plain", b"not found")
            )
            if delays:
                time.sleep(delays[0])
            if len(delays) > 1:
                self._drip(status, content_type, body, every=delays[1])
                return
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            if status in (301, 302):
                self.send_header("Location", body.decode())
                body = b""
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # The client may give up (size limit or timeout), as it should.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def _drip(self, status, content_type, body, *, every):
            # Each line well within any per-read timeout; all of them far beyond it.
            head = [f"HTTP/1.1 {status} OK", f"Content-Type: {content_type}"]
            head += [f"X-Padding-{n}: ." for n in range(60)]
            head += [f"Content-Length: {len(body)}", ""]
            try:
                for line in head:
                    self.wfile.write(line.encode() + b"\r\n")
                    time.sleep(every)
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should

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
