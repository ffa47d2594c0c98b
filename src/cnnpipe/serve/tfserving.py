"""TensorFlow Serving's REST API, answered as TF Serving answers for the exported SavedModel.

The export stage writes a SavedModel with two signatures: ``serving_default`` takes
``images`` (encoded image bytes, tf.string [-1]) and ``serving_uint8`` takes ``pixels``
(uint8 [-1, H, W, C]); both return ``probabilities`` [N, classes], ``classes`` (the class
names, [N, classes]) and ``predicted_class`` [N]. A client written for either server works
against the other.

Requests: ``instances`` (row format) or ``inputs`` (columnar). An image is ``{"b64": ...}``,
also inside a named input ``{"images": {"b64": ...}}``; pixels are nested lists [H][W][C]
(row) or [N][H][W][C] (columnar), also under ``pixels``. Without ``signature_name`` the form
of the data picks the signature; with one, the data must be of that signature's form.
Answers: ``{"predictions": [{output: value}, ...]}`` for rows, ``{"outputs": {...}}`` for
columns; errors ``{"error": ...}``.
"""

from __future__ import annotations

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
SIGNATURE_INPUTS = {"serving_default": "images", "serving_uint8": "pixels"}


def _model(request: Request, name: str, model_version: str | None) -> ServedModel:
    # TF Serving's own wording, so a client written against it recognizes the answer.
    return requested_model(request, name, model_version,
                           f"Servable not found for request: Specific({name}, {model_version})")


@router.get("/v1/models/{name}")
@router.get("/v1/models/{name}/versions/{model_version}")
async def model_status(request: Request, name: str, model_version: str | None = None) -> dict:
    model = _model(request, name, model_version)
    return {"model_version_status": [{
        "version": served_models(request).settings.model_version,
        "state": "AVAILABLE" if model.ready else "LOADING",
        "status": {"error_code": "OK", "error_message": ""},
    }]}


@router.get("/v1/models/{name}/metadata")
@router.get("/v1/models/{name}/versions/{model_version}/metadata")
async def model_metadata(request: Request, name: str, model_version: str | None = None) -> dict:
    model = _model(request, name, model_version)
    height, width, channels = model.spec.shape
    classes = len(model.class_names)
    outputs = {
        "probabilities": _tensor("DT_FLOAT", [-1, classes], "StatefulPartitionedCall:0"),
        "classes": _tensor("DT_STRING", [-1, classes], "StatefulPartitionedCall:1"),
        "predicted_class": _tensor("DT_STRING", [-1], "StatefulPartitionedCall:2"),
    }
    signatures = {
        "serving_default": {"images": _tensor("DT_STRING", [-1], "serving_default_images:0")},
        "serving_uint8": {"pixels": _tensor("DT_UINT8", [-1, height, width, channels],
                                            "serving_uint8_pixels:0")},
    }
    return {
        "model_spec": {"name": name, "signature_name": "",
                       "version": served_models(request).settings.model_version},
        "metadata": {"signature_def": {"signature_def": {
            signature: {"inputs": inputs, "outputs": outputs,
                        "method_name": "tensorflow/serving/predict", "defaults": {}}
            for signature, inputs in signatures.items()
        }}},
    }


def _tensor(dtype: str, dims: list[int], tensor_name: str) -> dict:
    return {"dtype": dtype, "name": tensor_name, "tensor_shape": {
        "dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}}


@router.post("/v1/models/{name}:predict")
@router.post("/v1/models/{name}/versions/{model_version}:predict")
async def predict(request: Request, name: str, model_version: str | None = None):
    model = _model(request, name, model_version)
    models = served_models(request)
    images, columnar = await models.run_in_pool(
        _request_images, await request.body(), model, models.settings.max_images_per_request)
    request.state.images = len(images)
    probabilities = await model.classify(images)
    names = model.class_names
    predicted = [names[i] for i in probabilities.argmax(axis=1)]
    values = probabilities.astype(np.float32).tolist()
    if columnar:
        return JSONResponse({"outputs": {"probabilities": values,
                                         "classes": [list(names)] * len(values),
                                         "predicted_class": predicted}})
    return JSONResponse({"predictions": [
        {"probabilities": row, "classes": list(names), "predicted_class": label}
        for row, label in zip(values, predicted, strict=True)]})


def _request_images(body: bytes, model: ServedModel, max_images: int):
    """(batch, columnar) from a predict request body."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise bad_request("the body must be a JSON object with \"instances\" or \"inputs\"")
    signature = payload.get("signature_name")
    if signature is not None and signature not in SIGNATURE_INPUTS:
        raise bad_request(f"Serving signature key {signature!r} not found; the signatures are "
                          f"{', '.join(SIGNATURE_INPUTS)}")
    if ("instances" in payload) == ("inputs" in payload):
        raise bad_request("send exactly one of \"instances\" (row format) or \"inputs\" "
                          "(columnar format)")
    columnar = "inputs" in payload
    items = _unwrap_columns(payload["inputs"]) if columnar else _unwrap_rows(payload["instances"])
    check_count(len(items), max_images)
    encoded = all(isinstance(item, dict) and set(item) == {"b64"} for item in items)
    wanted = SIGNATURE_INPUTS.get(signature)
    if wanted is not None and wanted != ("images" if encoded else "pixels"):
        form = '{"b64": ...} images' if wanted == "images" else "uint8 pixels [H][W][C]"
        raise bad_request(f"signature {signature} takes {wanted}: send {form}")
    if encoded:
        where = "inputs" if columnar else "instances"
        blobs = [from_base64(item["b64"], f"{where}[{i}]") for i, item in enumerate(items)]
        return decode_images(blobs, model.spec, where), columnar
    if any(isinstance(item, dict) for item in items):
        raise bad_request("an image is {\"b64\": \"<base64>\"} (or uint8 pixels [H][W][C]); "
                          "got an object with other keys")
    return pixel_array(items, None, model.spec, "inputs" if columnar else "instances"), columnar


def _unwrap_rows(instances: Any) -> list:
    if not isinstance(instances, list):
        raise bad_request("\"instances\" must be a list, one entry per image")
    return [_named_input(row, f"instance {i}") for i, row in enumerate(instances)]


def _named_input(value: Any, where: str) -> Any:
    """``{"images": x}`` or ``{"pixels": x}`` -> x; anything else as it is."""
    if isinstance(value, dict) and set(value) != {"b64"}:
        if len(value) != 1 or next(iter(value)) not in SIGNATURE_INPUTS.values():
            raise bad_request(f"{where}: unknown input(s) {', '.join(map(repr, value))}; the "
                              "inputs are images ({\"b64\": ...}) and pixels (uint8 [H][W][C])")
        return next(iter(value.values()))
    return value


def _unwrap_columns(inputs: Any) -> list:
    value = _named_input(inputs, "inputs")
    if not isinstance(value, list):
        raise bad_request("\"inputs\" must hold a list with one entry per image")
    return value
