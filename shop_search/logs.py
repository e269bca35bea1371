"""Structured logs: one JSON object per line, for the log collector of web, workers and beat."""

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger as GunicornLogger

# Attributes every LogRecord has; anything else on a record came from `extra=` and is kept.
_RECORD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            # gunicorn passes the request's atoms as the record's arguments.
            atoms = record.args
            entry.update(
                remote=atoms.get("h"),
                request=atoms.get("r"),
                status=atoms.get("s"),
                bytes=atoms.get("b"),
                duration_ms=round(int(atoms.get("D", 0)) / 1000, 1),
            )
        entry.update(
            (key, value) for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def query_session_redacted(query: str) -> str:
    """A query string with the value of every `session` parameter (the name as Django
    decodes it) replaced by `redacted`: the search log keeps only its keyed hash, and so
    must the logs."""
    if "session" not in query and "%" not in query:
        return query
    parameters = query.split("&")
    for n, parameter in enumerate(parameters):
        name, equals, _ = parameter.partition("=")
        if equals and unquote_plus(name) == "session":
            parameters[n] = f"{name}=redacted"
    return "&".join(parameters)


# The query of a URL or of a request line: from its first `?` to a space or a fragment.
_QUERY = re.compile(r"\?([^\s#]*)")


def session_redacted(text: str) -> str:
    """A URL or a request line (`GET /path?query HTTP/1.1`) with its query's `session`
    value redacted."""
    return _QUERY.sub(lambda match: "?" + query_session_redacted(match[1]), text, count=1)


class AccessLogger(GunicornLogger):
    """gunicorn's logger (docker/gunicorn.conf.py), whose access log atoms carry no raw
    `session` value: the request line, the query string and the referrer are redacted."""

    URL_ATOMS = ("r", "f", "{referer}i", "{http_referer}e", "{raw_uri}e")
    QUERY_ATOMS = ("q", "{query_string}e")

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for names, redacted in (
            (self.URL_ATOMS, session_redacted),
            (self.QUERY_ATOMS, query_session_redacted),
        ):
            for name in names:
                if isinstance(atoms.get(name), str):
                    atoms[name] = redacted(atoms[name])
        return atoms
