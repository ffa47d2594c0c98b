"""Every setting of ``cnnpipe serve`` in one typed model: type, range, default, description.

The command-line flags map one to one onto these fields (``--max-batch-size`` is
``max_batch_size``), and a bad value is refused in one line before TensorFlow loads. Defaults
and descriptions come from :mod:`cnnpipe.serve.fields`, which ``--help`` reads too.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cnnpipe.core.errors import ConfigError
from cnnpipe.serve.fields import default, description


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set or ``taskset``), not the
    machine's: TensorFlow sized to the machine would oversubscribe a pinned process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def _field(name: str, **limits):
    return Field(default(name), description=description(name), **limits)


Finite = {"allow_inf_nan": False}


class ServeSettings(BaseModel):
    """How ``cnnpipe serve`` listens, batches, limits requests and pins TensorFlow."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    host: Annotated[str, _field("host", min_length=1)]
    port: Annotated[int, _field("port", ge=1, le=65535)]
    models_dir: Annotated[str, _field("models_dir", min_length=1)]
    variants: Annotated[tuple[str, ...], _field("variants")]
    model_version: Annotated[str, _field("model_version", pattern=r"^[1-9][0-9]*$")]
    batching: Annotated[bool, _field("batching")]
    max_batch_size: Annotated[int, _field("max_batch_size", ge=1, le=4096)]
    max_latency_ms: Annotated[float, _field("max_latency_ms", ge=0, le=10_000, **Finite)]
    max_body_mb: Annotated[float, _field("max_body_mb", gt=0, le=1024, **Finite)]
    max_images_per_request: Annotated[int, _field("max_images_per_request", ge=1, le=65_536)]
    intra_op_threads: Annotated[int, Field(
        default_factory=usable_cores, description=description("intra_op_threads"), ge=1,
        le=1024)]
    inter_op_threads: Annotated[int, _field("inter_op_threads", ge=1, le=1024)]
    shutdown_timeout_s: Annotated[float, _field("shutdown_timeout_s", gt=0, le=3600, **Finite)]
    log_format: Annotated[Literal["json", "text"], _field("log_format")]

    @property
    def effective_batch_size(self) -> int:
        """Images per model call at most: batching off is a batch of one request."""
        return self.max_batch_size if self.batching else 1

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


def build_settings(**values) -> ServeSettings:
    """:class:`ServeSettings` from ``values``, or a :class:`ConfigError` naming the first bad
    one as its flag (``--port: Input should be less than or equal to 65535 (got 70000)``)."""
    try:
        return ServeSettings(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "settings"
        raise ConfigError(f"{flag}: {error['msg']} (got {error.get('input')!r})") from None
