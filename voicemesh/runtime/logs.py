"""Structured logs: one JSON object per line (or plain text), with a record's extra fields.

Call sites pass context as ``extra={"session_id": ...}``; the JSON formatter
writes every such field, so a session's lines can be found by its id, and adds
the trace and span ids of the current OpenTelemetry span when the line has none.
"""

from __future__ import annotations

import json
import logging
import sys

from opentelemetry import trace

from voicemesh.wire.ratelimit import TokenBucket

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if "trace_id" not in out:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                out["trace_id"] = format(context.trace_id, "032x")
                out["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: msg key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        line = f"{line} {extra}" if extra else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LogThrottle:
    """Which lines of a flood of like ones to write (sans-IO): at most one per ``interval_s`` seconds for each
    key, so an attacker who makes the process refuse thousands of requests a second cannot fill its logs.
    Keys come from a small fixed set (a refusal's reason), never from the request. Raises ValueError unless
    ``interval_s`` > 0."""

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"a log throttle needs interval_s > 0, got {interval_s}")
        self.interval_s = interval_s
        self._buckets: dict[str, TokenBucket] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """A line for ``key`` at ``now`` (monotonic seconds): None to leave it unwritten, else write it, with the
        number of lines for ``key`` left unwritten since the last one written (put it in the line)."""
        bucket = self._buckets.setdefault(key, TokenBucket(1.0 / self.interval_s, 1, now))
        if bucket.take(now) > 0:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        return self._suppressed.pop(key, 0)


def setup(level: str = "info", fmt: str = "json") -> None:
    """Log to stderr at ``level`` in ``fmt`` ("json" or "text"). Raises ValueError for others."""
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be json or text, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
