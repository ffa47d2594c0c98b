"""The Open Inference Protocol (KServe "v2") over REST, as KServe, Triton, Seldon MLServer and
OpenVINO Model Server speak it.

Inference takes one input tensor, either

- ``BYTES``, shape ``[N]`` (or ``[N, 1]``): N encoded images (JPEG, PNG, BMP, GIF, WebP,
  TIFF), each a base64 string in ``data``, as KServe's image examples send them;
  ``parameters.content_type`` may be absent or ``"base64"`` (MLServer's name for it); or
- ``UINT8``, shape ``[N, H, W, C]`` at the model's stored size: pixels in ``data``, flat in
  row-major order or nested.

The input's name is free (``images`` and ``pixels`` are the metadata's names). Outputs are
``probabilities`` (FP32 [N, classes]), ``classes`` (BYTES [N, classes], the class names in
column order) and ``predicted_class`` (BYTES [N]); ``outputs: [{"name": ...}]`` picks some.
Not supported: the binary tensor data extension (data after the JSON) and gRPC.
"""

from __future__ import annotations

import uuid
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cnnpipe.serve.inputs import (
    bad_request,
    check_count,
    decode_images,
    from_base64,
    parse_json,
    pixel_array,
)
from cnnpipe.serve.served import ServedModel, requested_model, served_models

router = APIRouter()
OUTPUT_NAMES = ("probabilities", "classes", "predicted_class")
BASE64_CONTENT_TYPES = (None, "base64")


def _server_version() -> str:
    try:
        return version("cnnpipe")
    except PackageNotFoundError:
        return "unknown"


@router.get("/v2")
async def server_metadata() -> dict:
    return {"name": "cnnpipe", "version": _server_version(), "extensions": []}


@router.get("/v2/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/v2/health/ready")
async def server_ready(request: Request) -> JSONResponse:
    ready = served_models(request).ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


def _model(request: Request, name: str, model_version: str | None = None) -> ServedModel:
    served = served_models(request).settings.model_version
    return requested_model(request, name, model_version,
                           f"model {name} has no version {model_version}; it serves version "
                           f"{served}")


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{model_version}")
async def model_metadata(request: Request, name: str, model_version: str | None = None) -> dict:
    model = _model(request, name, model_version)
    rows, classes = -1, len(model.class_names)
    return {
        "name": name,
        "versions": [served_models(request).settings.model_version],
        "platform": "tensorflow_keras",
        "inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [rows]},
            {"name": "pixels", "datatype": "UINT8", "shape": [rows, *model.spec.shape]},
        ],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [rows, classes]},
            {"name": "classes", "datatype": "BYTES", "shape": [rows, classes]},
            {"name": "predicted_class", "datatype": "BYTES", "shape": [rows]},
        ],
    }


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{model_version}/ready")
async def model_ready(request: Request, name: str, model_version: str | None = None):
    model = _model(request, name, model_version)
    return JSONResponse({"name": name, "ready": model.ready},
                        status_code=200 if model.ready else 503)


@router.post("/v2/models/{name}/infer")
@router.post("/v2/models/{name}/versions/{model_version}/infer")
async def infer(request: Request, name: str, model_version: str | None = None) -> JSONResponse:
    model = _model(request, name, model_version)
    models = served_models(request)
    payload, wanted, images = await models.run_in_pool(
        _parse, await request.body(), model, models.settings.max_images_per_request)
    request.state.images = len(images)
    probabilities = await model.classify(images)
    request_id = payload.get("id")
    return JSONResponse({
        "model_name": name,
        "model_version": models.settings.model_version,
        "id": request_id if isinstance(request_id, str) else str(uuid.uuid4()),
        "outputs": _outputs(probabilities, model.class_names, wanted),
    })


def _parse(body: bytes, model: ServedModel, max_images: int):
    """(payload, requested outputs, pixels): all of a request's parsing in one pool task."""
    payload = parse_json(body)
    wanted = _requested_outputs(payload)
    return payload, wanted, _input_images(payload, model, max_images)


def _requested_outputs(payload: Any) -> tuple[str, ...]:
    if not isinstance(payload, dict):
        raise bad_request("the body must be a JSON object with `inputs`")
    requested = payload.get("outputs")
    if requested is None:
        return OUTPUT_NAMES
    names = [o.get("name") if isinstance(o, dict) else o for o in requested] \
        if isinstance(requested, list) else [requested]
    unknown = [n for n in names if n not in OUTPUT_NAMES]
    if unknown:
        raise bad_request(f"no output {unknown[0]!r}; the outputs are {', '.join(OUTPUT_NAMES)}")
    return tuple(names)


def _input_images(payload: dict, model: ServedModel, max_images: int) -> np.ndarray:
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise bad_request("`inputs` must be a list of one tensor: BYTES (base64 encoded images)"
                          " or UINT8 (pixels [N, H, W, C])")
    tensor = inputs[0]
    where = f"input {tensor.get('name', 0)}"
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if "data" not in tensor:
        raise bad_request(f"{where}: no `data` (the binary data extension is not supported)")
    if datatype == "BYTES":
        return _encoded_images(tensor, shape, model, max_images, where)
    if datatype == "UINT8":
        if isinstance(shape, list) and shape and isinstance(shape[0], int):
            check_count(shape[0], max_images)
        return pixel_array(tensor["data"], shape, model.spec, where)
    raise bad_request(f"{where}: datatype {datatype!r} is not taken; send BYTES (encoded images)"
                      " or UINT8 (pixels)", "wrong_dtype")


def _encoded_images(tensor: dict, shape, model: ServedModel, max_images: int,
                    where: str) -> np.ndarray:
    parameters = tensor.get("parameters") or {}
    content_type = parameters.get("content_type") if isinstance(parameters, dict) else None
    if content_type not in BASE64_CONTENT_TYPES:
        raise bad_request(f"{where}: content_type {content_type!r} is not taken; BYTES images "
                          "are base64 strings (content_type \"base64\" or none)")
    data = tensor["data"]
    if isinstance(data, list) and all(isinstance(row, list) and len(row) == 1 for row in data):
        data = [row[0] for row in data]  # shape [N, 1]
    if not isinstance(data, list):
        raise bad_request(f"{where}: `data` must be a list of base64 strings")
    if shape not in ([len(data)], [len(data), 1]):
        raise bad_request(f"{where}: shape {shape!r} does not match the {len(data)} images in "
                          "`data` (send [N])", "wrong_shape")
    check_count(len(data), max_images)
    blobs = [from_base64(text, f"{where}[{i}]") for i, text in enumerate(data)]
    return decode_images(blobs, model.spec, where)


def _outputs(probabilities: np.ndarray, class_names: tuple[str, ...],
             wanted: tuple[str, ...]) -> list[dict]:
    rows, columns = probabilities.shape
    every = {
        "probabilities": {"datatype": "FP32", "shape": [rows, columns],
                          "data": probabilities.astype(np.float32).ravel().tolist()},
        "classes": {"datatype": "BYTES", "shape": [rows, columns],
                    "data": list(class_names) * rows},
        "predicted_class": {"datatype": "BYTES", "shape": [rows],
                            "data": [class_names[i] for i in probabilities.argmax(axis=1)]},
    }
    return [{"name": name, **every[name]} for name in wanted]
