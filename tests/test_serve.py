"""`cnnpipe serve` as a real process on 127.0.0.1, answering real HTTP.

A tiny CNN trained on scikit-learn's handwritten digits (8x8, real data shipped offline) is
saved as a variant in tmp; every answer is checked against `TrainedVariant.predict` on the
same pixels. Two servers start side by side: one for the protocols, the refusals and the
concurrency, one holding requests in its batcher (a long max_latency_ms) for SIGTERM.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from fixtures import png_header_claiming  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "digits"
SHAPE = (8, 8, 1)
MAX_IMAGES = 8
MAX_BODY_MB = 1
START_TIMEOUT_S = 240  # TensorFlow's import and a model load on a busy 2-core machine
REQUEST_TIMEOUT_S = 60


# --- a trained variant and servers --------------------------------------------------------


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    return pixels, digits.target


def _save_trained_variant(folder: Path) -> None:
    import keras

    from cnnpipe.core.model_card import ModelCard, TrainedAs

    keras.utils.set_random_seed(0)
    pixels, labels = _digits()
    inputs = keras.Input(SHAPE, dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(pixels, labels, epochs=4, batch_size=64, verbose=0)
    assert history.history["accuracy"][-1] > 0.5, "the tiny model did not learn the digits"
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    ModelCard(variant=folder.name, architecture="tiny", class_names=tuple(map(str, range(10))),
              raw_image_shape=SHAPE, image_loading=None, preprocessing={}, config={},
              trained_as=TrainedAs(train_images=len(labels), batch_size=64, epochs=4),
              ).write(folder / "model_card.json")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `cnnpipe serve` subprocess and its log."""

    def __init__(self, models_dir: Path, log: Path, *flags: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(log, "wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cnnpipe.cli", "serve", VARIANT, "--port", str(self.port),
                 "--models-dir", str(models_dir), *flags],
                cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        self.first_ready_status = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_listening_then_ready(self) -> None:
        """Poll readiness from the moment the port opens; keep the first answer.

        The first answer is reliably 503: the server starts loading only once it listens, and
        loading begins with TensorFlow's import, seconds on any machine."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"cnnpipe serve exited with {self.process.returncode}:\n{self.tail()}")
            try:
                status = httpx.get(f"{self.url}/v2/health/ready", timeout=10).status_code
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if self.first_ready_status is None:
                self.first_ready_status = status
            if status == 200:
                return
            time.sleep(0.05)
        pytest.fail(f"cnnpipe serve not ready within {START_TIMEOUT_S} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from cnnpipe.inference import TrainedVariant

    root = tmp_path_factory.mktemp("serve")
    _save_trained_variant(root / "models" / VARIANT)
    main = Server(root / "models", root / "main.log", "--max-latency-ms", "150",
                  "--max-images-per-request", str(MAX_IMAGES), "--max-body-mb", str(MAX_BODY_MB),
                  "--log-format", "json")
    held = Server(root / "models", root / "held.log", "--max-latency-ms", "10000",
                  "--max-batch-size", "64")
    try:
        main.wait_listening_then_ready()
        held.wait_listening_then_ready()
        trained = TrainedVariant.load(root / "models" / VARIANT)
        yield {"main": main, "held": held, "trained": trained, "pixels": _digits()[0]}
    finally:
        main.stop()
        held.stop()


# --- helpers ------------------------------------------------------------------------------


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1)).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def oip_bytes(*images: bytes) -> dict:
    return {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [len(images)],
                        "parameters": {"content_type": "base64"},
                        "data": [b64(image) for image in images]}]}


def oip_pixels(batch: np.ndarray, nested: bool = False) -> dict:
    data = batch.tolist() if nested else batch.ravel().tolist()
    return {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": list(batch.shape),
                        "data": data}]}


def oip_probabilities(answer: dict) -> np.ndarray:
    (output,) = [o for o in answer["outputs"] if o["name"] == "probabilities"]
    assert output["datatype"] == "FP32"
    return np.reshape(output["data"], output["shape"])


def post(server: Server, path: str, **kwargs) -> httpx.Response:
    try:
        return httpx.post(server.url + path, timeout=REQUEST_TIMEOUT_S, **kwargs)
    except httpx.TimeoutException:
        pytest.fail(f"POST {path} got no answer within {REQUEST_TIMEOUT_S} s:\n{server.tail()}")


def get(server: Server, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=REQUEST_TIMEOUT_S)


def assert_refused(response: httpx.Response, status: int, says: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert "\n" not in body["error"] and says in body["error"], body["error"]


def expected(served, batch: np.ndarray) -> np.ndarray:
    return served["trained"].predict(batch)


# --- before any server: settings and the batcher ------------------------------------------


@pytest.mark.parametrize("argv, says", [
    (["--port", "70000"], "--port: Input should be less than or equal to 65535 (got 70000)"),
    (["--max-latency-ms", "nan"], "--max-latency-ms: Input should be a finite number"),
    (["--max-batch-size", "0"], "--max-batch-size: Input should be greater than or equal to 1"),
    (["nope", "--models-dir", "{models}"], "no trained variant `nope`"),
    (["--models-dir", "{empty}"], "no trained variants under"),
])
def test_bad_settings_are_refused_in_one_line_before_tensorflow(tmp_path, capsys, argv, says):
    from cnnpipe.cli import main

    (tmp_path / "models" / "other").mkdir(parents=True)
    argv = [a.format(models=tmp_path / "models", empty=tmp_path / "none") for a in argv]
    assert main(["serve", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and says in error and error.count("\n") == 1, error


def test_the_batcher_gathers_requests_and_keeps_each_request_whole():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor as Pool

    from cnnpipe.serve.batcher import MicroBatcher

    sizes = []

    async def scenario():
        with Pool(1) as pool:
            batcher = MicroBatcher(lambda x: x * 2, pool, max_batch_size=4, max_latency_s=5,
                                   on_batch=sizes.append)
            batcher.start()
            requests = [np.full((n, 1), i) for i, n in enumerate([1, 2, 1, 3])]
            answers = [asyncio.ensure_future(batcher.predict(r)) for r in requests]
            await asyncio.sleep(0)  # all four are queued; 1+2+1 fill a batch of 4
            await batcher.stop()  # drains: the last request runs without waiting 5 s
            return requests, [a.result() for a in answers]

    requests, answers = asyncio.run(scenario())
    assert sizes == [4, 3]
    for request, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer, request * 2)


# --- readiness and metadata ---------------------------------------------------------------


def test_ready_answers_503_until_the_model_is_warm_then_200(served):
    main = served["main"]
    assert main.first_ready_status == 503
    assert get(main, "/v2/health/ready").status_code == 200
    assert get(main, f"/v2/models/{VARIANT}/ready").json() == {"name": VARIANT, "ready": True}
    assert get(main, "/v2/health/live").status_code == 200
    assert get(main, "/v2").json()["name"] == "cnnpipe"


def test_metadata_names_inputs_and_outputs_in_both_protocols(served):
    main = served["main"]
    oip = get(main, f"/v2/models/{VARIANT}").json()
    assert {i["name"]: (i["datatype"], i["shape"]) for i in oip["inputs"]} == {
        "images": ("BYTES", [-1]), "pixels": ("UINT8", [-1, 8, 8, 1])}
    assert oip["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
    status = get(main, f"/v1/models/{VARIANT}").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    signatures = get(main, f"/v1/models/{VARIANT}/metadata").json()["metadata"]["signature_def"]
    default = signatures["signature_def"]["serving_default"]
    assert default["inputs"]["images"]["dtype"] == "DT_STRING"
    pixels = signatures["signature_def"]["serving_uint8"]["inputs"]["pixels"]
    assert [d["size"] for d in pixels["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]


# --- one image through each protocol ------------------------------------------------------


def test_oip_bytes_and_uint8_give_the_variants_probabilities(served):
    main, batch = served["main"], served["pixels"][:3]
    want = expected(served, batch)
    answer = post(main, f"/v2/models/{VARIANT}/infer", json={"id": "r1", **oip_bytes(
        *map(png, batch))}).json()
    assert answer["model_name"] == VARIANT and answer["id"] == "r1"
    np.testing.assert_allclose(oip_probabilities(answer), want, atol=1e-5, rtol=0)
    (predicted,) = [o for o in answer["outputs"] if o["name"] == "predicted_class"]
    assert predicted["data"] == [str(i) for i in want.argmax(axis=1)]
    for nested in (False, True):
        answer = post(main, f"/v2/models/{VARIANT}/versions/1/infer",
                      json=oip_pixels(batch, nested)).json()
        np.testing.assert_allclose(oip_probabilities(answer), want, atol=1e-5, rtol=0)


def test_an_image_of_another_size_is_fitted_as_predict_fits_it(served):
    from cnnpipe.predict import read_image

    colour = np.repeat(np.kron(served["pixels"][5], np.ones((3, 3, 1), np.uint8)), 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(colour).save(buffer, format="PNG")  # 24x24 RGB for an 8x8 grayscale model
    answer = post(served["main"], f"/v2/models/{VARIANT}/infer",
                  json=oip_bytes(buffer.getvalue())).json()
    want = expected(served, read_image(buffer.getvalue(), SHAPE)[None])
    np.testing.assert_allclose(oip_probabilities(answer), want, atol=1e-5, rtol=0)


def test_tf_serving_rows_and_columns_answer_as_tf_serving(served):
    main, batch = served["main"], served["pixels"][10:12]
    want = expected(served, batch)
    path = f"/v1/models/{VARIANT}:predict"
    for instances in ([{"b64": b64(png(p))} for p in batch],
                      [{"images": {"b64": b64(png(p))}} for p in batch],
                      batch.tolist()):
        rows = post(main, path, json={"instances": instances}).json()["predictions"]
        np.testing.assert_allclose([r["probabilities"] for r in rows], want, atol=1e-5, rtol=0)
        assert [r["predicted_class"] for r in rows] == [str(i) for i in want.argmax(axis=1)]
        assert rows[0]["classes"] == [str(i) for i in range(10)]
    columns = post(main, f"/v1/models/{VARIANT}/versions/1:predict", json={
        "signature_name": "serving_uint8", "inputs": {"pixels": batch.tolist()}}).json()
    np.testing.assert_allclose(columns["outputs"]["probabilities"], want, atol=1e-5, rtol=0)
    columns = post(main, path, json={"inputs": {"images": [{"b64": b64(png(p))} for p in batch]}})
    np.testing.assert_allclose(columns.json()["outputs"]["probabilities"], want, atol=1e-5)


def test_upload_route_gives_top_k_with_bands_and_an_error_per_bad_file(served):
    main, pixels = served["main"], served["pixels"][20]
    want = expected(served, pixels[None])[0]
    files = [("files", ("digit.png", png(pixels), "image/png")),
             ("files", ("notes.txt", b"not an image", "text/plain"))]
    answer = post(main, "/predict?top=3", files=files)
    assert answer.status_code == 200, answer.text
    good, bad = answer.json()["predictions"]
    assert good["file"] == "digit.png" and len(good["probabilities"]) == 3
    best = int(np.argmax(want))
    assert good["predicted_class"] == str(best)
    assert good["confidence"] == pytest.approx(want[best], abs=1e-5)
    assert good["band"] in ("super confident", "pretty sure", "I think", "not very sure")
    for name, p in good["probabilities"].items():
        assert p == pytest.approx(want[int(name)], abs=1e-5)
    assert bad["file"] == "notes.txt" and "error" in bad and "probabilities" not in bad


# --- refusals -----------------------------------------------------------------------------


def test_bad_inputs_get_their_4xx_in_the_protocols_error_shape(served):
    main = served["main"]
    infer, predict = f"/v2/models/{VARIANT}/infer", f"/v1/models/{VARIANT}:predict"
    eight = np.zeros((1, *SHAPE), np.uint8)
    cases = [
        (infer, {"content": b""}, 400, "empty body"),
        (predict, {"content": b"   "}, 400, "empty body"),
        (infer, {"content": b'{"inputs": ['}, 400, "malformed JSON"),
        (predict, {"content": b"\xff\xfe{"}, 400, "malformed JSON"),
        (infer, {"json": oip_bytes(b"GIF89a but not really")}, 400, "input images[0]: "),
        (predict, {"json": {"instances": [{"b64": b64(b"hello")}]}}, 400, "instances[0]"),
        (infer, {"json": oip_bytes(png_header_claiming(100_000, 100_000))}, 400, "too large"),
        (predict, {"json": {"instances": [{"b64": "***"}]}}, 400, "not valid base64"),
        (infer, {"json": oip_pixels(np.zeros((1, 9, 9, 1), np.uint8))}, 400, "does not fit"),
        (infer, {"json": {"inputs": [{**oip_pixels(eight)["inputs"][0], "datatype": "FP32"}]}},
         400, "datatype 'FP32'"),
        (infer, {"json": {"inputs": [{**oip_pixels(eight)["inputs"][0],
                                      "data": [0.5] * 64}]}}, 400, "whole numbers"),
        (predict, {"json": {"instances": [np.full(SHAPE, 300).tolist()]}}, 400, "0..255"),
        (predict, {"json": {"instances": [[[0]]]}}, 400, "this model takes uint8 (N, 8, 8, 1)"),
        (predict, {"json": {"instances": [], "inputs": []}}, 400, "exactly one of"),
        (infer, {"json": oip_bytes(*[png(served["pixels"][0])] * (MAX_IMAGES + 1))}, 413,
         f"at most {MAX_IMAGES}"),
        (predict, {"json": {"instances": eight.repeat(MAX_IMAGES + 1, 0).tolist()}}, 413,
         "--max-images-per-request"),
        ("/v2/models/nope/infer", {"json": oip_pixels(eight)}, 404, "no model 'nope'"),
        ("/v1/models/nope:predict", {"json": {"instances": eight.tolist()}}, 404, "no model"),
        (f"/v1/models/{VARIANT}/versions/7:predict", {"json": {"instances": eight.tolist()}},
         404, "Servable not found"),
        ("/predict", {"files": [("files", ("a.txt", b"text", "text/plain"))]}, 400,
         "no file could be classified"),
    ]
    for path, body, status, says in cases:
        response = post(main, path, **body)
        if path == "/predict":  # the upload route also lists every file's outcome
            assert response.status_code == status and says in response.json()["error"]
            continue
        assert_refused(response, status, says)
    assert_refused(get(main, "/v2/models/nope"), 404, "no model")
    assert_refused(get(main, "/no/such/route"), 404, "no route")
    metrics = get(main, "/metrics").text
    for reason in ("empty_body", "malformed_json", "not_an_image", "wrong_shape", "wrong_dtype",
                   "too_many_images", "unknown_model"):
        assert _metric(metrics, "cnnpipe_serve_errors_total", reason=reason) >= 1, reason
    assert_server_healthy(served)


def _raw_http(server: Server, head: bytes, chunks=()) -> bytes:
    """Send ``head`` (and ``chunks``, stopping when the server hangs up), read the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT_S) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered (413) and closed before the whole body went
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


def test_an_oversized_body_gets_413_before_it_is_sent(served):
    main = served["main"]
    head = (f"POST /v2/models/{VARIANT}/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {10**9}\r\n\r\n").encode()
    answer = _raw_http(main, head)  # only the headers: the server must not wait for the body
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"--max-body-mb" in answer
    chunk = b"x" * 65536
    chunked = (f"POST /v1/models/{VARIANT}:predict HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode()
    pieces = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
              for _ in range(MAX_BODY_MB * 16 + 8))
    answer = _raw_http(main, chunked, pieces)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert_server_healthy(served)


def assert_server_healthy(served) -> None:
    main, batch = served["main"], served["pixels"][30:31]
    assert get(main, "/v2/health/ready").status_code == 200
    answer = post(main, f"/v2/models/{VARIANT}/infer", json=oip_pixels(batch)).json()
    np.testing.assert_allclose(oip_probabilities(answer), expected(served, batch), atol=1e-5)


# --- concurrency, metrics, logs, shutdown -------------------------------------------------


def _metric(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$"
    values = re.findall(pattern, text, re.M)
    assert values, f"{name}{{{wanted}}} not in /metrics"
    return float(values[0])


def test_64_concurrent_requests_are_answered_right_and_batched(served):
    main, pixels = served["main"], served["pixels"][:64]
    want = expected(served, pixels)

    def one(index: int) -> np.ndarray:
        body = oip_bytes(png(pixels[index])) if index % 2 else oip_pixels(pixels[index:index + 1])
        answer = client.post(f"/v2/models/{VARIANT}/infer", json=body)
        assert answer.status_code == 200, answer.text
        return oip_probabilities(answer.json())[0]

    limits = httpx.Limits(max_connections=64)
    with httpx.Client(base_url=main.url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client, \
            ThreadPoolExecutor(64) as pool:
        got = np.stack(list(pool.map(one, range(64))))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    metrics = get(main, "/metrics").text
    batches = _metric(metrics, "cnnpipe_serve_batch_size_count", model=VARIANT)
    single = _metric(metrics, "cnnpipe_serve_batch_size_bucket", le="1.0", model=VARIANT)
    assert batches > single, "no batch held more than one image"
    assert _metric(metrics, "cnnpipe_serve_requests_total", model=VARIANT,
                   route="/v2/models/{name}/infer", status="200") >= 64


def test_every_request_is_one_json_log_line(served):
    lines = [json.loads(line) for line in served["main"].log.read_text().splitlines()
             if line.startswith("{")]
    requests = [line for line in lines if line["logger"] == "cnnpipe.serve.access"]
    infer = [r for r in requests if r["path"] == f"/v2/models/{VARIANT}/infer"
             and r["status"] == 200]
    assert infer and {"method", "status", "latency_ms", "model", "images", "client"} <= set(
        infer[0])
    assert infer[0]["model"] == VARIANT and infer[0]["images"] >= 1
    assert "Traceback" not in served["main"].log.read_text()


def test_sigterm_answers_the_requests_in_flight_then_exits_0(served):
    held, pixels = served["held"], served["pixels"][40:48]
    want = expected(served, pixels)
    answers: dict[int, np.ndarray] = {}

    def one(index: int) -> None:
        response = httpx.post(f"{held.url}/v2/models/{VARIANT}/infer",
                              json=oip_pixels(pixels[index:index + 1]), timeout=120)
        answers[index] = oip_probabilities(response.json())[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while _metric(get(held, "/metrics").text, "cnnpipe_serve_queued_images", model=VARIANT) < 8:
        assert time.monotonic() < deadline, f"8 requests never queued:\n{held.tail()}"
        time.sleep(0.05)
    held.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), f"a request in flight got no answer:\n{held.tail()}"
    assert sorted(answers) == list(range(8))
    np.testing.assert_allclose(np.stack([answers[i] for i in range(8)]), want, atol=1e-5)
    try:
        assert held.process.wait(timeout=60) == 0, held.tail()
    except subprocess.TimeoutExpired:
        pytest.fail(f"cnnpipe serve did not exit within 60 s of SIGTERM:\n{held.tail()}")
