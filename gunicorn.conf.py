"""Gunicorn settings for `make serve` (and for the HTTP figures of `make bench`).

Every setting below can be overridden from the environment, so the same file serves a laptop,
a container and the benchmarks:

=========================  =========  ========================================================
variable                   default    meaning
=========================  =========  ========================================================
PORT                       8000       port to listen on (as for `make run`)
HOST                       127.0.0.1  address to bind; set 0.0.0.0 in a container
WEB_CONCURRENCY            CPU count  worker processes (each one runs Python on one core)
GUNICORN_WORKER_CLASS      gthread    ``gthread`` or ``sync`` (see below)
GUNICORN_THREADS           32         threads per gthread worker: requests in flight per worker
GUNICORN_TIMEOUT           60         seconds a silent worker lives before it is killed
GUNICORN_GRACEFUL_TIMEOUT  30         seconds in-flight requests get to finish on restart/stop
GUNICORN_KEEPALIVE         5          seconds an idle keep-alive connection is kept open
GUNICORN_MAX_REQUESTS      0          recycle a worker after this many requests (0: never)
GUNICORN_LOG_LEVEL         info       gunicorn's own log level
GUNICORN_ACCESS_LOG        (unset)    ``-`` for an access log on stdout, or a file path
GUNICORN_CONTROL_SOCKET    (unset)    path of gunicorn's control socket (for ``gunicornc``)
PROMETHEUS_MULTIPROC_DIR   (unset)    directory of prometheus_client's per-worker files (below)
=========================  =========  ========================================================

Why ``gthread``: a call to an LLM is IO-bound (hundreds of milliseconds to tens of seconds of
waiting on the network), and a streamed ``/v1/chat/completions`` response holds its worker
until the last chunk. A ``sync`` worker serves one request at a time, so two sync workers are
two requests in flight; a gthread worker serves up to ``threads`` at once, for the memory of one
process (threads add almost nothing to a worker's ~32 MB). The threads share one GIL per
process, which costs little here because the CPU part of a request (parsing, selection, JSON)
is a fraction of a millisecond. ``make bench`` measures both classes on the same app: with an
instant mock model, and with a mock model that waits 100 ms like a (very fast) real one.
``sync`` also ignores keep-alive.

Why 32 threads and not the usual 2-4 per core: keep-alive clients are not spread evenly over
gthread workers. One worker often accepts most of the connections and queues their requests
for its own thread pool, so the concurrency a client actually gets is close to ``threads``,
not ``workers x threads``. Measured on 2 cores with 100 ms mock calls at 16 connections:
8 threads x 2 workers served 77 requests/s (p50 200 ms: requests queued), 16 or 32 threads
154/s (p50 101 ms); at 64 connections 32 threads served 536/s where 8 threads x 4 workers
served 287/s. With an instant mock, 8 and 32 threads differed by less than the noise of
that (shared) machine.

Timeouts: the router gives up on a request after ``REQUEST_DEADLINE_SECONDS`` (25 s by
default). For gthread workers ``timeout`` only detects a hung worker process (the worker's
main loop keeps its heartbeat while threads wait on providers); for sync workers it also caps
a single request, so keep it above the deadline plus the time a stream may take.
``graceful_timeout`` lets in-flight answers (and streams) finish when gunicorn stops or reloads.

The control socket (gunicorn 25.1+) is off unless ``GUNICORN_CONTROL_SOCKET`` names a path: its
default path is one per user, so a second gunicorn on the machine (a test, a benchmark) would
unlink the first one's socket, and the first to stop would remove the other's.

Prometheus across workers: when ``PROMETHEUS_MULTIPROC_DIR`` is set (prometheus_client's own
variable; ``make serve`` creates the directory and empties it between runs), every worker writes its
samples to files there and ``GET /metrics`` merges them all, whichever worker answers. The
``child_exit`` hook below tells prometheus_client when a worker has exited
(``multiprocess.mark_process_dead(pid)``), which removes that worker's live gauges; its counters
and histograms stay, so totals never go backwards after a restart. Without the variable, or
without prometheus_client installed, the hook does nothing.
"""

from __future__ import annotations

import os
from typing import Protocol


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"gunicorn.conf.py: {name} must be at least {minimum}, got {value}")
    return value


bind = f"{os.environ.get('HOST', '127.0.0.1').strip() or '127.0.0.1'}:{_int('PORT', 8000, minimum=1)}"

workers = _int("WEB_CONCURRENCY", os.cpu_count() or 1, minimum=1)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "").strip() or "gthread"
if worker_class not in ("gthread", "sync"):
    raise SystemExit(f"gunicorn.conf.py: GUNICORN_WORKER_CLASS must be gthread or sync, got {worker_class!r}")
# gunicorn switches a sync worker with threads > 1 to gthread; keep the class asked for.
threads = _int("GUNICORN_THREADS", 32, minimum=1) if worker_class == "gthread" else 1

timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = max_requests // 10

loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "").strip() or "info"
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "").strip() or None
errorlog = "-"

_control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
if _control_socket:
    control_socket = _control_socket
else:
    control_socket_disable = True
# Workers import the app after forking: each builds its own app, and a crash while importing
# shows up in the worker's log instead of silently killing the master.
preload_app = False


class _Worker(Protocol):
    pid: int


def child_exit(server: object, worker: _Worker) -> None:
    """Gunicorn's hook in the master after a worker exited: prometheus_client's bookkeeping for it."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not directory:
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    # prometheus_client ships types, but not for this function.
    multiprocess.mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]
