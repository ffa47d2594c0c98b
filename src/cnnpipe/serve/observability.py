"""What the server tells its operator: Prometheus metrics and one log line per request.

Metrics live in the application's own ``CollectorRegistry`` (two servers in one process, as
in the tests, do not share counters), exposed at ``GET /metrics`` in Prometheus' text format.
Labels are bounded: routes are templates (``/v2/models/{name}/infer``), models are the served
names, reasons a fixed set, so a client sending random paths cannot grow the series.

Request logs go through the ``logging`` module to stderr, as JSON lines by default.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cnnpipe.serve.errors import send_json, one_line

ACCESS_LOGGER = "cnnpipe.serve.access"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    """The server's Prometheus series."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cnnpipe_serve_requests", "HTTP requests answered, by route template, model and "
            "status", ["route", "model", "status"], registry=self.registry)
        self.latency = Histogram(
            "cnnpipe_serve_request_duration_seconds", "time from request to response, by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(
            "cnnpipe_serve_batch_size", "images in each model call (above 1: requests were "
            "batched together)", ["model"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.inference = Histogram(
            "cnnpipe_serve_inference_duration_seconds", "time of each model call",
            ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queued = Gauge(
            "cnnpipe_serve_queued_images", "images waiting in the batcher for a model call",
            ["model"], registry=self.registry)
        self.errors = Counter(
            "cnnpipe_serve_errors", "requests refused or failed, by reason", ["reason"],
            registry=self.registry)
        self.ready = Gauge(
            "cnnpipe_serve_model_ready", "1 once the model is loaded and warmed up", ["model"],
            registry=self.registry)

    def count_error(self, reason: str) -> None:
        self.errors.labels(reason=reason).inc()


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "request", {}),
        }
        return json.dumps(line)


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "request", {}).items()
                          if v is not None)
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        return f"{stamp} {record.levelname.lower()} {record.getMessage()} {fields}".rstrip()


def configure_logging(log_format: str) -> None:
    """Send every logger (uvicorn's included) to stderr in ``log_format`` (json or text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines() if log_format == "json" else _Text())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


class AccessLog:
    """ASGI middleware: per request, one log line and the request metrics; and the last
    resort that turns an unexpected exception into a one-line 500 instead of a traceback.

    Routes tell it what they served through ``request.state`` (``model``, ``images``).
    """

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        status = None

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception as exc:  # noqa: BLE001 - the server must answer and keep serving
            self.log.error("internal error: %s: %s", type(exc).__name__, one_line(exc))
            self.metrics.count_error("internal")
            if status is None:
                status = 500
                await send_json(send, 500, {"error": f"internal error: {type(exc).__name__}"})
        self._record(scope, state, status or 500, time.perf_counter() - start)

    def _record(self, scope, state: dict, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        model = state.get("model", "")
        self.metrics.requests.labels(route=route, model=model, status=str(status)).inc()
        self.metrics.latency.labels(route=route).observe(seconds)
        client = scope.get("client")
        self.log.info("request", extra={"request": {
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            "model": model or None,
            "images": state.get("images"),
            "client": client[0] if client else None,
        }})
