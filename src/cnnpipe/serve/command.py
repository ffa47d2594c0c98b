"""``cnnpipe serve``: the command line onto :class:`ServeSettings`, and uvicorn run in-process.

The server listens before any model loads: liveness answers at once, readiness 503 until
every model is loaded and warmed up. SIGTERM (and Ctrl+C) stops accepting connections, runs
what the batchers hold without waiting to fill batches, lets every request in flight finish
(up to ``--shutdown-timeout-s``), then exits 0 (130 for Ctrl+C, as every command).
"""

from __future__ import annotations

import argparse
import logging
import signal

from cnnpipe.core.errors import ConfigError
from cnnpipe.serve.fields import SETTINGS, default, description

DESCRIPTION = """\
Serve trained variants over HTTP: the Open Inference Protocol (KServe v2: /v2/...), TF
Serving's REST API (/v1/models/...), a multipart upload route (POST /predict) and Prometheus
metrics (GET /metrics). Concurrent requests are batched together. See docs/serve.md.

Exit status: 0 after SIGTERM (requests in flight are answered first); 130 after Ctrl+C (the
same graceful stop); 2 bad settings, an unknown variant, a model that does not load, or an
address that cannot be listened on."""

EPILOG = """\
examples:
  cnnpipe serve simple_cnn
  cnnpipe serve --port 9000 --max-batch-size 64 --max-latency-ms 2
  curl -s localhost:8080/v2/health/ready
  curl -s -F files=@shoe.jpg 'localhost:8080/predict?top=3'"""

# flag -> (setting, argparse options); the help text is the setting's description
FLAGS = {
    "--host": ("host", {}),
    "--port": ("port", {"type": int}),
    "--models-dir": ("models_dir", {"metavar": "DIR"}),
    "--model-version": ("model_version", {"metavar": "N"}),
    "--max-batch-size": ("max_batch_size", {"type": int, "metavar": "N"}),
    "--max-latency-ms": ("max_latency_ms", {"type": float, "metavar": "MS"}),
    "--max-body-mb": ("max_body_mb", {"type": float, "metavar": "MB"}),
    "--max-images-per-request": ("max_images_per_request", {"type": int, "metavar": "N"}),
    "--intra-op-threads": ("intra_op_threads", {"type": int, "metavar": "N"}),
    "--inter-op-threads": ("inter_op_threads", {"type": int, "metavar": "N"}),
    "--shutdown-timeout-s": ("shutdown_timeout_s", {"type": float, "metavar": "S"}),
    "--log-format": ("log_format", {"choices": ["json", "text"]}),
}


def add_serve_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve trained variants over HTTP (KServe v2, TF Serving REST, upload)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # an unset flag keeps the setting's default
    )
    parser.add_argument("variants", nargs="*", metavar="VARIANT",
                        help=description("variants"))
    for flag, (name, options) in FLAGS.items():
        shown = "" if default(name) is None else f" (default: {default(name)})"
        parser.add_argument(flag, dest=name, help=description(name) + shown, **options)
    parser.add_argument("--no-batching", dest="batching", action="store_false",
                        help="run every request alone (batching is on by default)")
    parser.set_defaults(handler=run_serve)


def settings_from_args(args: argparse.Namespace):
    """The :class:`ServeSettings` the flags give, or a one-line ConfigError."""
    from cnnpipe.serve.settings import build_settings

    values = {name: value for name, value in vars(args).items() if name in SETTINGS}
    if "variants" in values:
        values["variants"] = tuple(values["variants"])
    return build_settings(**values)


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    from cnnpipe.serve.observability import Metrics, configure_logging
    from cnnpipe.serve.served import ServedModels, resolve_variants

    served = resolve_variants(settings)  # an unknown variant is refused before anything starts
    configure_logging(settings.log_format)
    models = ServedModels(settings, served, Metrics())
    server = _server(settings, models)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; a
    # graceful stop is a success, so SIGTERM then lands on a handler that does nothing.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        if server.started:
            raise
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port} (see the line "
                          "above)") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if server.failure:
        raise ConfigError(server.failure)
    return 0


def _server(settings, models):
    import uvicorn

    from cnnpipe.serve.app import create_app

    class ServeServer(uvicorn.Server):
        """uvicorn's server, starting the model loading once it listens and flushing the
        batchers the moment a shutdown signal arrives."""

        failure: str | None = None

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                models.start_loading(self.fail)

        def fail(self, message: str) -> None:
            logging.getLogger("cnnpipe.serve").error("cannot serve: %s", message)
            self.failure = message
            self.should_exit = True

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            models.drain()

    config = uvicorn.Config(
        create_app(models), host=settings.host, port=settings.port, log_config=None,
        access_log=False, timeout_graceful_shutdown=settings.shutdown_timeout_s,
        lifespan="on", server_header=False)
    return ServeServer(config)
