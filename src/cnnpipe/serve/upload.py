"""``POST /predict``: image files uploaded as a browser form sends them, answered as
``cnnpipe predict --json`` answers: per file the top classes with a confidence band, or an
error of its own while the other files are still classified."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from cnnpipe.data.decode import ImageDecodeError
from cnnpipe.inference import InputSpec
from cnnpipe.predict import Prediction, prediction_record, read_image
from cnnpipe.serve.errors import ApiError
from cnnpipe.serve.inputs import check_count
from cnnpipe.serve.served import ServedModel, ServedModels

router = APIRouter()
FIELD = "files"


@router.post("/predict")
async def predict_upload(
    request: Request,
    top: int | None = Query(None, ge=1, description="the K most probable classes per file"),
    model: str | None = Query(None, description="the variant; needed when several are served"),
) -> JSONResponse:
    models: ServedModels = request.app.state.models
    served = _pick_model(models, model)
    request.state.model = served.name
    uploads = await _uploads(request, models.settings.max_images_per_request)
    request.state.images = len(uploads)
    contents = [await upload.read() for _, upload in uploads]
    predictions = [Prediction(file=name) for name, _ in uploads]
    pixels = await models.run_in_pool(_decode_each, contents, predictions, served.spec)
    decoded = [p for p in predictions if p.ok]
    if decoded:
        for prediction, row in zip(decoded, await served.classify(pixels), strict=True):
            prediction.probabilities = row
    records = [prediction_record(p, served.class_names, top) for p in predictions]
    body = {"model_name": served.name, "model_version": models.settings.model_version,
            "predictions": records}
    if not decoded:
        models.metrics.count_error("not_an_image")
        first = predictions[0]
        return JSONResponse({"error": f"no file could be classified: {first.file}: "
                                      f"{first.error}", **body}, status_code=400)
    return JSONResponse(body)


def _pick_model(models: ServedModels, name: str | None) -> ServedModel:
    if name is not None:
        return models.get(name)
    if len(models.by_name) > 1:
        raise ApiError(400, f"several models are served ({', '.join(models.by_name)}): name "
                       "one with ?model=", "bad_request")
    return next(iter(models.by_name.values()))


async def _uploads(request: Request, max_images: int) -> list[tuple[str, UploadFile]]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, f"send the images as multipart/form-data, field {FIELD!r} "
                       f"(curl -F {FIELD}=@shoe.jpg)", "bad_request")
    try:
        form = await request.form(max_files=max_images, max_fields=max_images)
    except HTTPException as exc:  # the multipart parser's refusal, e.g. too many files
        too_many = "Too many files" in str(exc.detail)
        raise ApiError(413 if too_many else 400, f"cannot read the upload: {exc.detail}",
                       "too_many_images" if too_many else "bad_request") from None
    uploads = [(value.filename or f"{FIELD}[{i}]", value)
               for i, value in enumerate(form.getlist(FIELD)) if isinstance(value, UploadFile)]
    if not uploads:
        raise ApiError(400, f"no files in the form field {FIELD!r} (curl -F {FIELD}=@shoe.jpg)",
                       "empty_body")
    check_count(len(uploads), max_images)
    return uploads


def _decode_each(contents: list[bytes], predictions: list[Prediction], spec: InputSpec):
    """The pixels of every file that decodes; the others get their one-line error."""
    import numpy as np

    pixels = []
    for prediction, content in zip(predictions, contents, strict=True):
        try:
            pixels.append(read_image(content, spec.shape, spec.crop_to_aspect_ratio))
        except ImageDecodeError as exc:
            prediction.error = exc.reason
    return np.stack(pixels) if pixels else np.zeros((0, *spec.shape), np.uint8)
