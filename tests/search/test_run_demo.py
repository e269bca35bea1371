"""`./bin/demo`'s command, `manage.py run_demo`, for real on a tiny catalog: it serves the
shop at once while the first model trains in a background process, and stopping the
server stops the training (its run recorded as failed, so the next start trains again)."""

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from django.utils.html import escape

from catalog.models import Product
from embeddings.models import FinetuneRun
from tests.builders import ROOT, manage_py_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page_when_served(url: str, demo: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert demo.poll() is None, demo.communicate()[0]
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()
        except OSError:  # not listening yet
            time.sleep(0.2)
    pytest.fail(f"{url} was not served within {timeout:.0f} s")


def waited_for(condition, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.django_db(transaction=True)
def test_the_demo_serves_at_once_and_its_training_stops_with_it(tmp_path):
    port = free_port()
    log = tmp_path / "training.log"
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "run_demo", f"127.0.0.1:{port}", "--products", "24",
         "--admin-password", "demo", "--training-log", str(log)],
        cwd=ROOT, env=manage_py_env(tmp_path, "dev"), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        home = page_when_served(f"http://127.0.0.1:{port}/", demo)
        assert Product.objects.count() == 24
        assert any(
            escape(title) in home for title in Product.objects.values_list("title", flat=True)
        )
        # The training runs beside the server, in its own process.
        assert waited_for(lambda: FinetuneRun.objects.filter(status="running").exists()), (
            log.read_text()
        )
    finally:
        demo.send_signal(signal.SIGTERM)
        output = demo.communicate(timeout=60)[0]
    assert f"Shop: http://localhost:{port}/" in output
    assert "Created the demo admin account: admin / demo" in output
    assert "The first model trains in the background" in output
    # Stopped with the server, and says so: the next start trains again.
    run = FinetuneRun.objects.get()
    assert run.status == FinetuneRun.Status.FAILED


def test_the_first_search_s_loading_is_done_ahead_and_searches_nothing(db):
    from search.models import SearchLog
    from search.pipeline import search_preload

    search_preload()
    assert not SearchLog.objects.exists()
