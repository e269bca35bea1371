"""Logs keep no raw `session` value: gunicorn's access log (docker/gunicorn.conf.py), as
configured. (The JSON access log of a real gunicorn, and nginx's: tests/ops/test_proxy.py.)"""

import runpy
from datetime import timedelta
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from shop_search.logs import AccessLogger, query_session_redacted, session_redacted
from tests.ops.topology import ROOT


@pytest.mark.parametrize(
    ("logged", "expected"),
    [
        (
            "GET /api/search/?q=red&session=visit-7f3a HTTP/1.1",
            "GET /api/search/?q=red&session=redacted HTTP/1.1",
        ),
        ("/?session=a&q=b&session=c", "/?session=redacted&q=b&session=redacted"),
        ("/?sess%69on=a&session+=b", "/?sess%69on=redacted&session+=b"),
        ("https://front.example/p?session=a#top", "https://front.example/p?session=redacted#top"),
        ("https://front.example/a=b?session=c", "https://front.example/a=b?session=redacted"),
        ("/api/search/?q=session%3Dx&xsession=1", "/api/search/?q=session%3Dx&xsession=1"),
        ("/session=a/?q=1", "/session=a/?q=1"),
        ("/?q=?&session=a", "/?q=?&session=redacted"),
    ],
)
def test_session_values_are_redacted(logged, expected):
    assert session_redacted(logged) == expected


def test_a_query_strings_session_values_are_redacted():
    query = "q=red&session=a&sess%69on=b&xsession=c"
    assert query_session_redacted(query) == "q=red&session=redacted&sess%69on=redacted&xsession=c"


def test_gunicorns_access_log_as_configured_keeps_no_session(monkeypatch, capsys):
    monkeypatch.setenv("LOG_FORMAT", "plain")  # gunicorn's own line format, with the referrer
    cfg = Config()
    for name, value in runpy.run_path(str(ROOT / "docker" / "gunicorn.conf.py")).items():
        if name in cfg.settings:  # what gunicorn does with its config file
            cfg.set(name, value)
    logger = cfg.logger_class(cfg)
    assert isinstance(logger, AccessLogger)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/api/search/?q=red&session=visit-7f3a",
        "PATH_INFO": "/api/search/",
        "QUERY_STRING": "q=red&session=visit-7f3a",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.9",
        "HTTP_REFERER": "https://front.example/?session=visit-7f3a",
    }
    request = SimpleNamespace(headers=[("REFERER", environ["HTTP_REFERER"])])
    response = SimpleNamespace(status="200 OK", sent=120, headers=[])
    logger.access(response, request, environ, timedelta(milliseconds=12))
    line = capsys.readouterr().out
    assert '"GET /api/search/?q=red&session=redacted HTTP/1.1" 200 120' in line
    assert '"https://front.example/?session=redacted"' in line
    assert "visit-7f3a" not in line
    atoms = logger.atoms(response, request, environ, timedelta(0))
    assert not [name for name, value in atoms.items() if "visit-7f3a" in str(value)]
