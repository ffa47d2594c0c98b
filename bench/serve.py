"""Serving throughput and latency: `cnnpipe serve` under load, beside in-process inference and
the exported formats.

    python bench/serve.py [--variant simple_cnn] [--requests 2000] [--concurrency 1,8,32]
                          [--soak 10000] [--skip-formats]

Run after `dvc repro` (it needs models/<variant>, and models/<variant>/export for the formats).
Everything stays on 127.0.0.1 and every loop is bounded by a request count and a time cap.

What it measures, in one sitting (numbers swing +-40% between runs on shared 2-core machines,
so compare within one run):

- in-process: `TrainedVariant.predict` (Keras `model.predict`) and `TrainedVariant.predict_batch`
  (the traced function the server calls), one image per call and 32 per call;
- the server with batching on and off, at each concurrency: requests/s and p50/p95/p99
  latency of one-image TF Serving REST requests (`{"instances": [{"b64": PNG}]}`), and the
  mean batch the model ran (from /metrics);
- the no-op ceiling: `GET /v2/health/live` at the highest concurrency, the same server, no
  model work;
- the server's RSS after 1,000 and after `--soak` requests (batching on);
- each exported format (SavedModel signatures, ONNX, LiteRT float and quantized): median
  latency of one image and images/s at batch 256.

The load generator runs on the same two cores as the server: wrk (`apt-get install wrk`; C, one
thread, each level for `--seconds`) when it is installed, else httpx on asyncio (far more CPU a
request, so the server's figures read lower). Absolute requests/s are a floor; ratios between
rows of one run are what the figures are for.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TIME_CAP_S = 120  # per measurement: a stuck server ends the run, not the machine's afternoon


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_png(variant: str) -> bytes:
    from PIL import Image

    from cnnpipe.core import layout
    from cnnpipe.core.shards import ShardSet

    image = ShardSet(layout.split_dir("test")).read([0])[0]
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, "PNG")
    return buffer.getvalue()


# --- in-process ---------------------------------------------------------------------------


def per_call_ms(function, images: np.ndarray, calls: int) -> float:
    function(images)  # tracing and first-call set-up are not part of the figure
    start = time.perf_counter()
    for _ in range(calls):
        function(images)
    return (time.perf_counter() - start) / calls * 1000


def in_process(variant: str) -> list[dict]:
    from cnnpipe.core import layout
    from cnnpipe.core.shards import ShardSet
    from cnnpipe.inference import TrainedVariant

    trained = TrainedVariant.load(layout.model_dir(variant))
    images = ShardSet(layout.split_dir("test")).read(list(range(32)))
    rows = []
    for name, function, calls in (("TrainedVariant.predict", trained.predict, 50),
                                  ("TrainedVariant.predict_batch", trained.predict_batch, 500)):
        for batch in (1, 32):
            ms = per_call_ms(function, images[:batch], calls)
            rows.append({"path": name, "batch": batch, "ms_per_call": round(ms, 3),
                         "images_per_s": round(batch / ms * 1000, 1)})
    return rows


# --- the server ---------------------------------------------------------------------------


class Server:
    """`cnnpipe serve` in a subprocess on a free loopback port, stopped with SIGTERM."""

    def __init__(self, variant: str, batching: bool):
        self.port = free_port()
        command = [sys.executable, "-m", "cnnpipe.cli", "serve", variant, "--port", str(self.port),
                   "--log-format", "json"]
        if not batching:
            command.append("--no-batching")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"cnnpipe serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"cnnpipe serve was not ready after {timeout:.0f} s")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def mean_batch(self) -> tuple[float, float]:
        """(sum, count) of the batch-size histogram in /metrics."""
        import httpx

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        total = sum(float(v) for v in re.findall(r"^\S*batch_size\S*_sum\S* (\S+)$", text, re.M))
        count = sum(float(v) for v in re.findall(r"^\S*batch_size\S*_count\S* (\S+)$", text, re.M))
        return total, count

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _load(url: str, body: bytes | None, requests: int, concurrency: int) -> dict:
    """``requests`` requests from ``concurrency`` connections, each sent when the last answered."""
    import httpx

    latencies: list[float] = []
    failures = 0
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    deadline = time.monotonic() + TIME_CAP_S

    async def worker(client):
        nonlocal failures
        for _ in remaining:
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            if body is None:
                response = await client.get(url)
            else:
                response = await client.post(url, content=body,
                                             headers={"content-type": "application/json"})
            latencies.append(time.perf_counter() - start)
            failures += response.status_code != 200

    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = sorted(value * 1000 for value in latencies)
    return {
        "requests": len(ms), "failed": failures, "requests_per_s": round(len(ms) / wall, 1),
        "p50_ms": round(ms[len(ms) // 2], 2), "p95_ms": round(ms[int(len(ms) * 0.95)], 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
    }


# wrk's Lua hooks: the request body from a file, and the summary as one JSON line.
WRK_SCRIPT = """
local body_file = os.getenv("WRK_BODY")
if body_file then
  local f = io.open(body_file, "rb")
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end
done = function(summary, latency, requests)
  local failed = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "failed": %d, "seconds": %f, "p50": %f, "p95": %f, "p99": %f}\\n',
    summary.requests, failed, summary.duration / 1e6, latency:percentile(50),
    latency:percentile(95), latency:percentile(99)))
end
"""


def load_wrk(url: str, body: bytes | None, seconds: int, concurrency: int) -> dict:
    """wrk (C, one thread) for ``seconds`` from ``concurrency`` connections: the load
    generator costs the shared cores far less than a Python client would."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        script, body_file = Path(tmp, "bench.lua"), Path(tmp, "body.json")
        script.write_text(WRK_SCRIPT)
        env = dict(os.environ)
        if body is not None:
            body_file.write_bytes(body)
            env["WRK_BODY"] = str(body_file)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s",
             str(script), url], env=env, capture_output=True, text=True,
            timeout=seconds + 60, check=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    return {"requests": summary["requests"], "failed": summary["failed"],
            "requests_per_s": round(summary["requests"] / summary["seconds"], 1),
            **{f"{p}_ms": round(summary[p] / 1000, 2) for p in ("p50", "p95", "p99")}}


def load(url, body, requests, concurrency, seconds: int | None = None) -> dict:
    """Timed with wrk when it is installed (`apt-get install wrk`) and ``seconds`` is given;
    otherwise ``requests`` requests from httpx."""
    if seconds and shutil.which("wrk"):
        return load_wrk(url, body, seconds, concurrency)
    return asyncio.run(_load(url, body, requests, concurrency))


def predict_body(png: bytes) -> bytes:
    return json.dumps({"instances": [{"b64": base64.b64encode(png).decode()}]}).encode()


def server_rows(variant: str, png: bytes, requests: int, levels: list[int],
                seconds: int | None) -> list[dict]:
    rows = []
    for batching in (True, False):
        server = Server(variant, batching)
        try:
            server.wait_ready()
            url = f"{server.url}/v1/models/{variant}:predict"
            load(url, predict_body(png), 100, 8)  # warm the connections and the code paths
            for concurrency in levels:
                before = server.mean_batch()
                row = load(url, predict_body(png), requests, concurrency, seconds)
                after = server.mean_batch()
                batches = after[1] - before[1]
                row["mean_batch"] = round((after[0] - before[0]) / batches, 2) if batches else None
                rows.append({"route": "v1 predict", "batching": batching,
                             "concurrency": concurrency, **row})
            if batching:
                row = load(f"{server.url}/v2/health/live", None, requests, max(levels), seconds)
                rows.append({"route": "no-op (GET /v2/health/live)", "batching": batching,
                             "concurrency": max(levels), **row})
        finally:
            server.stop()
    return rows


def soak(variant: str, png: bytes, total: int) -> dict:
    server = Server(variant, batching=True)
    try:
        server.wait_ready()
        url = f"{server.url}/v1/models/{variant}:predict"
        load(url, predict_body(png), 1000, 8)
        after_1000 = server.rss_mb()
        sent = 1000
        while sent < total:
            chunk = min(2000, total - sent)
            load(url, predict_body(png), chunk, 8)
            sent += chunk
        after_total = server.rss_mb()
    finally:
        server.stop()
    return {"rss_mb_after_1000": round(after_1000, 1), f"rss_mb_after_{total}": round(after_total, 1),
            "growth": round(after_total / after_1000 - 1, 4)}


# --- exported formats ---------------------------------------------------------------------


def format_runners(variant: str) -> dict:
    """Each exported format as ``(uint8 batch) -> probabilities``, from models/<v>/export."""
    import tensorflow as tf

    from cnnpipe.core import layout
    from cnnpipe.export import formats
    from cnnpipe.export.savedmodel import PIXELS_INPUT, PIXELS_SIGNATURE, savedmodel_dir

    root = layout.export_dir(variant)
    version = json.loads((root / "model_card.json").read_text())["export_version"]
    signature = tf.saved_model.load(str(savedmodel_dir(root, variant, version))).signatures[
        PIXELS_SIGNATURE]
    return {
        "SavedModel serving_uint8": lambda pixels: signature(
            **{PIXELS_INPUT: tf.constant(pixels)})["probabilities"].numpy(),
        "ONNX (onnxruntime)": formats.OnnxRunner(root / formats.ONNX_FILE),
        "LiteRT float": formats.LiteRTRunner(root / formats.LITERT_FLOAT_FILE),
        "LiteRT dynamic-range": formats.LiteRTRunner(root / formats.LITERT_QUANTIZED_FILE),
    }


def format_rows(variant: str) -> list[dict]:
    from cnnpipe.core import layout
    from cnnpipe.core.shards import ShardSet

    images = ShardSet(layout.split_dir("test")).read(list(range(256)))
    rows = []
    for name, run in format_runners(variant).items():
        single = per_call_ms(run, images[:1], 200)
        batch = per_call_ms(run, images, 10)
        rows.append({"format": name, "one_image_ms": round(single, 3),
                     "batch_256_images_per_s": round(256 / batch * 1000, 1)})
    return rows


def markdown(title: str, rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(key, "")) for key in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="simple_cnn")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=int, default=10,
                        help="each load level's duration with wrk (when installed); 0 = count "
                             "--requests with the Python client instead")
    parser.add_argument("--soak", type=int, default=10_000)
    parser.add_argument("--skip-formats", action="store_true")
    parser.add_argument("--formats-variant", default=None,
                        help="the exported variant whose formats are timed (default: the first "
                             "directory under models/ with an export/ folder)")
    args = parser.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "src"))
    levels = [int(level) for level in args.concurrency.split(",")]
    png = sample_png(args.variant)
    print(markdown(f"In-process, {args.variant}", in_process(args.variant)))
    print(markdown(f"cnnpipe serve, {args.variant}, {args.requests} one-image requests",
                   server_rows(args.variant, png, args.requests, levels,
                               args.seconds or None)))
    print(markdown("Server memory (batching on, concurrency 8)", [soak(args.variant, png, args.soak)]))
    if not args.skip_formats:
        exported = args.formats_variant or next(
            (p.parent.name for p in sorted(Path("models").glob("*/export"))), None)
        if exported:
            print(markdown(f"Exported formats, {exported}", format_rows(exported)))
    print(f"cpu: {platform_cpu()}; cores: {len(os.sched_getaffinity(0))}")


def platform_cpu() -> str:
    info = Path("/proc/cpuinfo").read_text()
    name = re.search(r"model name\s*:\s*(.*)", info)
    family = re.search(r"cpu family\s*:\s*(\d+)", info)
    model = re.search(r"^model\s*:\s*(\d+)", info, re.M)
    return (f"{name.group(1) if name else '?'} (family {family.group(1) if family else '?'}, "
            f"model {model.group(1) if model else '?'})")


if __name__ == "__main__":
    main()
