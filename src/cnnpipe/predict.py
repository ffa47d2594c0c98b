"""Classify image files with a trained variant: the logic behind ``cnnpipe predict``.

A file goes through the same steps as a training image did, so a file that was in the
dataset gets exactly the model input evaluation gave it:

1. :func:`~cnnpipe.data.decode.decode_image` with the channels of the prepared data
   (a colour photo becomes grayscale for Fashion-MNIST; transparency is flattened onto white);
2. :func:`~cnnpipe.data.folders.fit_to_size` to the prepared data's height and width, the
   resize the image-folder sources use (Pillow bilinear, centre crop when the model card's
   ``image_loading`` says ``crop_to_aspect_ratio``); nothing happens when the file already
   has that size.

Everything that decides the model's input is in the model card or in the model itself
(:class:`~cnnpipe.inference.TrainedVariant` reads and checks both); a card that lacks one of
those keys is refused (retrain), never completed from a data card that may come from another
run.

Those uint8 pixels are the model's input: the saved model resizes, converts channels and
normalizes them itself, with the constants it was trained with.

Every decodable file then goes through the model in one batch. A file that cannot be read or
decoded gets an error of its own; the other files are still classified.

TensorFlow is imported only when a variant is loaded and by :func:`save_gradcams`, so
importing this module (and ``cnnpipe --help``) stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import ConfigError
from cnnpipe.data.decode import ImageDecodeError, decode_image
from cnnpipe.inference import CARD_NAME, MODEL_NAME, TrainedVariant

GRADCAM_MIN_SIDE = 224  # overlays are enlarged (nearest neighbour) to at least this many pixels


@dataclass(frozen=True)
class Band:
    name: str
    threshold: float  # the band holds confidences strictly above this
    marker: str  # what a person sees in the terminal
    ascii_marker: str  # the same where the terminal cannot show the marker


# The tutorial's feedback: "super confident" above 0.9, "pretty sure" above 0.7, "I think"
# above 0.5, "not very sure" otherwise.
BANDS = (
    Band("super confident", 0.9, "\N{LARGE GREEN CIRCLE}", "[++]"),
    Band("pretty sure", 0.7, "\N{LARGE YELLOW CIRCLE}", "[+ ]"),
    Band("I think", 0.5, "\N{LARGE ORANGE CIRCLE}", "[~ ]"),
    Band("not very sure", -math.inf, "\N{LARGE RED CIRCLE}", "[? ]"),
)


def confidence_band(confidence: float) -> Band:
    """The first band whose threshold ``confidence`` exceeds (0.9 itself is "pretty sure")."""
    for band in BANDS:
        if confidence > band.threshold:
            return band
    return BANDS[-1]  # NaN compares false everywhere; it is certainly "not very sure"


# --- finding a trained variant ------------------------------------------------------------


def available_variants(models_dir: str | Path) -> list[str]:
    """Variants under ``models_dir`` with both a model card and a saved model."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(
        d.name for d in root.iterdir()
        if (d / CARD_NAME).is_file() and (d / MODEL_NAME).is_file()
    )


def _unknown_variant(models_dir: Path, problem: str) -> ConfigError:
    found = available_variants(models_dir)
    if found:
        hint = f"available: {', '.join(found)}"
    else:
        hint = f"no trained variants under {models_dir}/ (run `dvc repro`, or pass --models-dir)"
    return ConfigError(f"{problem}; {hint}")


def variant_folder(models_dir: str | Path, variant: str) -> Path:
    """``models_dir/<variant>`` for :meth:`TrainedVariant.load`, or a one-line
    :class:`ConfigError` naming the variants that are there."""
    models_dir = Path(models_dir)
    if not variant or variant in (".", "..") or "/" in variant or "\\" in variant:
        raise _unknown_variant(models_dir, f"`{variant}` is not a variant name")
    folder = models_dir / variant
    card_path, model_path = folder / CARD_NAME, folder / MODEL_NAME
    if not card_path.is_file():
        raise _unknown_variant(models_dir, f"no trained variant `{variant}` "
                               f"({card_path} not found)")
    if not model_path.is_file():
        raise _unknown_variant(models_dir, f"variant `{variant}` has no saved model "
                               f"({model_path} not found)")
    return folder


# --- files to model inputs ----------------------------------------------------------------


def read_image(
    source: str | Path | bytes, raw_shape: tuple[int, int, int], crop_to_aspect_ratio: bool = False
) -> np.ndarray:
    """uint8 ``raw_shape`` pixels: what the file would have been in the prepared data.

    Raises :class:`ImageDecodeError` for anything that is not a complete, supported image.
    """
    from cnnpipe.data.folders import fit_to_size

    height, width, channels = raw_shape
    pixels = decode_image(source, channels=channels)
    return fit_to_size(pixels, (height, width), crop_to_aspect_ratio)


@dataclass
class Prediction:
    """One file's outcome: ``probabilities`` over every class, or ``error``."""

    file: str
    probabilities: np.ndarray | None = None  # (num_classes,) float64
    error: str | None = None
    gradcam: str | None = None  # where its Grad-CAM overlay was written

    @property
    def ok(self) -> bool:
        return self.error is None

    def ranking(self, top: int | None = None) -> list[int]:
        """Class indices, most probable first (ties keep class order), ``top`` of them."""
        order = np.argsort(-self.probabilities, kind="stable")
        return [int(i) for i in order[:top]]

    @property
    def predicted(self) -> int:
        return self.ranking(1)[0]

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.predicted])


def _not_a_file(source) -> str | None:
    """Why ``source`` is skipped before decoding: a folder is not read into (a shell glob
    such as ``photos/*`` names the files), and is reported like any other skipped file."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return "a folder, not an image file: skipped (name its files, e.g. FOLDER/*.jpg)"
    return None


def classify_files(
    trained: TrainedVariant, files: list[str | Path]
) -> tuple[list[Prediction], np.ndarray]:
    """A :class:`Prediction` per file, in order, and the model inputs of the decodable ones.

    All decodable files go through the model in one ``predict`` call. The inputs (N, H, W, C),
    the raw uint8 pixels the model took, are in the order of the successful predictions.
    """
    spec = trained.input_spec
    predictions = [Prediction(file=str(f)) for f in files]
    raws, decoded = [], []
    for prediction, source in zip(predictions, files, strict=True):
        prediction.error = _not_a_file(source)
        if prediction.error:
            continue
        try:
            raws.append(read_image(source, spec.shape, spec.crop_to_aspect_ratio))
        except ImageDecodeError as exc:
            prediction.error = exc.reason
            continue
        decoded.append(prediction)
    inputs = np.stack(raws) if raws else np.zeros((0, *spec.shape), dtype=np.uint8)
    for prediction, row in zip(decoded, trained.predict(inputs), strict=True):
        prediction.probabilities = row
    return predictions, inputs


# --- Grad-CAM -----------------------------------------------------------------------------


def gradcam_paths(out: str | Path, count: int) -> list[Path]:
    """Where the overlays of ``count`` files go: ``out`` itself for one file; for several,
    ``<stem>_<n><suffix>`` beside it, n = 1, 2, ... the file's position on the command line
    (``cam.png`` -> ``cam_1.png``, ``cam_2.png``)."""
    out = Path(out)
    if count == 1:
        return [out]
    suffix = out.suffix or ".png"
    return [out.with_name(f"{out.stem}_{n}{suffix}") for n in range(1, count + 1)]


def _enlarge(rgb: np.ndarray, min_side: int = GRADCAM_MIN_SIDE) -> np.ndarray:
    """Integer nearest-neighbour upscaling: a 28x28 overlay is a postage stamp otherwise."""
    factor = max(1, math.ceil(min_side / min(rgb.shape[:2])))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def save_gradcams(
    trained: TrainedVariant, predictions: list[Prediction], inputs: np.ndarray, out: str | Path
) -> None:
    """Grad-CAM of the predicted class over each classified image, as PNG files.

    ``inputs`` are :func:`classify_files`' model inputs. Overlays show the image as the model
    saw it (its input size, enlarged by an integer factor to at least
    ``GRADCAM_MIN_SIDE`` pixels). Sets each prediction's ``gradcam`` path.
    """
    from PIL import Image

    from cnnpipe.evaluate.diagnostics import find_gradcam_layer, gradcam_heatmaps, overlay_heatmap

    targets = gradcam_paths(out, len(predictions))
    classified = [(p, t) for p, t in zip(predictions, targets, strict=True) if p.ok]
    if not classified:
        return
    classes = np.array([p.predicted for p, _ in classified])
    layer = find_gradcam_layer(trained.model)
    heatmaps = gradcam_heatmaps(trained.model, inputs, class_indices=classes, layer=layer)
    overlays = overlay_heatmap(inputs, heatmaps)
    for (prediction, target), overlay in zip(classified, overlays, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_enlarge(overlay)).save(target, format="PNG")
        prediction.gradcam = str(target)


# --- output -------------------------------------------------------------------------------


def prediction_record(
    prediction: Prediction, class_names: tuple[str, ...], top: int | None = None
) -> dict:
    """The JSON form: file, predicted_class, confidence, band, probabilities (most probable
    first; ``top`` of them) and gradcam when written; or file and error."""
    if not prediction.ok:
        return {"file": prediction.file, "error": prediction.error}
    record = {
        "file": prediction.file,
        "predicted_class": class_names[prediction.predicted],
        "confidence": prediction.confidence,
        "band": confidence_band(prediction.confidence).name,
        "probabilities": {
            class_names[i]: float(prediction.probabilities[i]) for i in prediction.ranking(top)
        },
    }
    if prediction.gradcam is not None:
        record["gradcam"] = prediction.gradcam
    return record


def can_show(text: str, encoding: str | None) -> bool:
    """Whether a stream in ``encoding`` can print ``text`` (markers on a cp1252 console)."""
    try:
        text.encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def format_prediction(
    prediction: Prediction,
    class_names: tuple[str, ...],
    top: int | None = None,
    fancy: bool = True,
) -> str:
    """What a person reads for one classified file: verdict line, then one line per class.

    ``fancy`` False swaps the coloured markers for ASCII ones.
    """
    band = confidence_band(prediction.confidence)
    marker = band.marker if fancy else band.ascii_marker
    lines = [
        f"{prediction.file}: {marker} {band.name}: {class_names[prediction.predicted]} "
        f"({prediction.confidence:.1%})"
    ]
    shown = prediction.ranking(top)
    width = max(len(class_names[i]) for i in shown)
    for i in shown:
        p = float(prediction.probabilities[i])
        bar = "#" * int(round(p * 20))
        lines.append(f"    {class_names[i]:<{width}}  {p:6.1%}  {bar}".rstrip())
    if prediction.gradcam is not None:
        lines.append(f"    Grad-CAM: {prediction.gradcam}")
    return "\n".join(lines)
