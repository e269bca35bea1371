"""What the bench scripts share: Django on a bench's own scratch database, another bench
script loaded as a module, and latency percentiles. Imported as `harness` (a script's own
folder leads sys.path; bench/ is not a package)."""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def setup_django(database: str, **overrides) -> None:
    """Django with `database` as the test database's name (the scripts build it with the
    test runner's machinery, away from the shop's own) and `overrides` set on settings."""
    import django
    from django.conf import settings

    settings.DATABASES["default"]["TEST"] = {"NAME": database}
    for name, value in overrides.items():
        setattr(settings, name, value)
    django.setup()


def bench_module(name: str):
    """Another bench script as a module, under a name of its own (imported as `search`,
    bench/search.py would shadow the search app)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def p50_p99(milliseconds: list[float]) -> tuple[float, float]:
    return statistics.median(milliseconds), percentile(milliseconds, 0.99)


def percentiles(milliseconds: list[float], digits: int = 1) -> str:
    """ "p50 12.3 ms   p99 45.6 ms" """
    p50, p99 = p50_p99(milliseconds)
    return f"p50 {p50:6.{digits}f} ms   p99 {p99:6.{digits}f} ms"


class CpuClock:
    """CPU time, in ms, of this process and of every process of the database server (the
    connection's backend, parallel workers, and through the postmaster's reaped-children
    total, those that exited). On a machine shared with other work a search's wall time
    grows with the load; its CPU time does not, so phases measured minutes apart compare."""

    def __init__(self, connection):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
        self.postmaster = int(_stat_fields(backend)[1])
        self.tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")

    def _server_ns(self) -> float:
        reaped = _stat_fields(self.postmaster)  # cutime, cstime: fields 16 and 17
        total = (int(reaped[13]) + int(reaped[14])) * self.tick_ns
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if int(_stat_fields(proc.name)[1]) == self.postmaster:
                        total += int((proc / "schedstat").read_text().split()[0])
                except (OSError, ValueError):  # it exited meanwhile
                    continue
        return total

    def start(self) -> float:
        server = self._server_ns()
        return server + time.process_time_ns()

    def stop(self, started: float) -> float:
        own = time.process_time_ns()
        return (own + self._server_ns() - started) / 1e6


def _stat_fields(pid) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
