"""Observers for one process: a log line per request, EMF lines on stdout, and several observers as one.

Which observer where:

- ``make run`` (``flask run``): ``LogLineObserver("readable")``, one human line per request on the
  ``costroute.requests`` logger, e.g. ``POST /route 200 mock:advanced rung 1 $0.000113 ...``.
- ``LOG_FORMAT=json``: ``LogLineObserver("json")``, the same logger, one compact JSON line
  (``logline.json_line``) per request.
- Lambda: ``EmfObserver()`` alone. Its line is the request's log line and carries the metrics; it
  is written to stdout directly because the runtime's JSON log format wraps ``logging`` records,
  and CloudWatch extracts no metric from a wrapped line.
- gunicorn (``make serve``): a log line observer and ``prometheus.PrometheusMetrics`` together.

Wrap them in ``CompositeObserver`` even when there is one: it keeps an observer's bug out of the
request (a metrics bug must not fail a paid request) and says so on the ``costroute.observe``
logger.

The request lines reach stdout even when the app never configured logging: when the
``costroute.requests`` logger has no handler, it gets one that writes ``%(message)s`` to stdout
and stops propagating (so a root handler does not print each line twice); when no logger on its
way up to the root has a level either, it logs at INFO. A level set on ``costroute`` (the app's
``LOG_LEVEL``) still applies: ``LOG_LEVEL=WARNING`` silences the request lines.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Literal, TextIO

from costroute.observe.emf import NAMESPACE, emf_lines
from costroute.observe.logline import json_line, readable_line
from costroute.observe.record import RequestObserver, RequestRecord

REQUEST_LOGGER = "costroute.requests"
OBSERVE_LOGGER = "costroute.observe"
LineStyle = Literal["readable", "json"]

_observe_logger = logging.getLogger(OBSERVE_LOGGER)
_setup_lock = threading.Lock()
# One lock for every direct write to stdout, so lines of concurrent requests never interleave.
_write_lock = threading.Lock()


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stdout`` is when a line is written (redirected, or captured by a test)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Write the line to the current stdout."""
        self.stream = sys.stdout
        super().emit(record)


def _ensure_stdout_handler(logger: logging.Logger) -> None:
    with _setup_lock:
        if logger.handlers:
            return
        logger.addHandler(_StdoutHandler())
        logger.propagate = False


def _no_level_configured(logger: logging.Logger) -> bool:
    """Whether neither the logger nor any ancestor below the root has a level of its own."""
    node: logging.Logger | None = logger
    while node is not None and not isinstance(node, logging.RootLogger):
        if node.level != logging.NOTSET:
            return False
        node = node.parent
    return True


class LogLineObserver:
    """One line per request on the ``costroute.requests`` logger at INFO: readable, or JSON."""

    def __init__(self, style: LineStyle = "readable", logger_name: str = REQUEST_LOGGER) -> None:
        if style not in ("readable", "json"):
            raise ValueError(f"style must be 'readable' or 'json', got {style!r}")
        self.style: LineStyle = style
        self._logger = logging.getLogger(logger_name)
        _ensure_stdout_handler(self._logger)

    def observe(self, record: RequestRecord) -> None:
        """Log the record's line."""
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            # Decided at the first request, not at construction: the app sets its levels after
            # building its observers, and a level it chose must win over ours.
            if not _no_level_configured(logger):
                return
            logger.setLevel(logging.INFO)
        line = readable_line(record) if self.style == "readable" else json_line(record)
        logger.info("%s", line)


class EmfObserver:
    """CloudWatch EMF: one whole JSON line per request, written to the stream directly (not ``logging``)."""

    def __init__(self, stream: TextIO | None = None, namespace: str = NAMESPACE) -> None:
        # None: whatever sys.stdout is at each write, so a redirected or captured stdout is followed.
        self._stream = stream
        self.namespace = namespace
        self._failed = False

    def observe(self, record: RequestRecord) -> None:
        """Write the record's EMF line and flush it."""
        line = "".join(line + "\n" for line in emf_lines(record, self.namespace))
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            with _write_lock:
                stream.write(line)
                stream.flush()
        except (OSError, ValueError) as exc:  # a closed or broken stream: the request goes on
            _observe_logger.warning("EMF line for request %s not written: %s", record.request_id, exc,
                                    exc_info=exc if not self._failed else None)
            self._failed = True


class CompositeObserver:
    """Several observers as one: each is called; one that raises is logged and the others still run."""

    def __init__(self, observers: Iterable[RequestObserver]) -> None:
        self.observers: tuple[RequestObserver, ...] = tuple(observers)
        self._failures: dict[tuple[int, type[BaseException]], int] = {}
        self._lock = threading.Lock()

    def observe(self, record: RequestRecord) -> None:
        """Tell every observer about the record; never raise."""
        for index, observer in enumerate(self.observers):
            try:
                observer.observe(record)
            except Exception as exc:  # noqa: BLE001  (a metrics bug must not fail a paid request; logged below)
                self._report(index, observer, record, exc)

    def _report(self, index: int, observer: RequestObserver, record: RequestRecord, exc: Exception) -> None:
        with self._lock:
            key = (index, type(exc))
            count = self._failures[key] = self._failures.get(key, 0) + 1
        name = type(observer).__name__
        if count == 1:
            _observe_logger.warning("observer %s failed on request %s; the request goes on",
                                    name, record.request_id, exc_info=exc)
        else:
            # The traceback was logged the first time; later failures of the same kind say so in one line.
            _observe_logger.warning("observer %s failed again on request %s (%s: %s; %d times so far)",
                                    name, record.request_id, type(exc).__name__, exc, count)
