"""Classify image files with a trained variant: the logic behind ``cnnpipe predict``.

A file goes through the same steps as a training image did, so a file that was in the
dataset gets exactly the model input evaluation gave it:

1. :func:`~cnnpipe.data.decode.decode_image` with the channels of the prepared data
   (a colour photo becomes grayscale for Fashion-MNIST; transparency is flattened onto white);
2. :func:`~cnnpipe.data.folders.fit_to_size` to the prepared data's height and width, the
   resize the image-folder sources use (Pillow bilinear, centre crop when the model card's
   ``image_loading`` says ``crop_to_aspect_ratio``); nothing happens when the file already
   has that size.

Everything that decides the model's input is in the model card or in the model itself; a
card that lacks one of those keys is refused (retrain), never completed from a data card that
may come from another run. The data card is read only for optional ``class_icons``.

Those uint8 pixels are the model's input: the saved model resizes, converts channels and
normalizes them itself, with the constants it was trained with.

Every decodable file then goes through the model in one batch. A file that cannot be read or
decoded gets an error of its own; the other files are still classified.

TensorFlow is imported only by :func:`load_predictor` and :func:`save_gradcams`, so importing
this module (and ``cnnpipe --help``) stays fast.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.data.bounds import MAX_IMAGE_SIDE
from cnnpipe.data.decode import ImageDecodeError, decode_image
from cnnpipe.core.errors import CnnpipeError, ConfigError

CARD_NAME = "model_card.json"
MODEL_NAME = "model.keras"
GRADCAM_MIN_SIDE = 224  # overlays are enlarged (nearest neighbour) to at least this many pixels

# What predict reads; resizing and normalization are inside the saved model itself.
# image_loading is null for sources that come as arrays (Fashion-MNIST): no file was fitted
# to size in training, and predict stretches as Keras does.
_CARD_KEYS = ("architecture", "class_names", "num_classes", "raw_image_shape", "image_loading")


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


# --- loading a trained variant ------------------------------------------------------------


@dataclass
class Predictor:
    """A trained variant and everything needed to turn a file into its model input."""

    variant: str
    model: Any  # keras.Model
    class_names: tuple[str, ...]
    raw_shape: tuple[int, int, int]  # (H, W, C) of the prepared data: the model's input
    crop_to_aspect_ratio: bool = False
    icons: dict[str, str] = field(default_factory=dict)


def available_variants(models_dir: str | Path) -> list[str]:
    """Variants under ``models_dir`` with both a model card and a saved model."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(
        d.name for d in root.iterdir()
        if (d / CARD_NAME).is_file() and (d / MODEL_NAME).is_file()
    )


def _unknown_variant(models_dir: Path, variant: str, problem: str) -> ConfigError:
    found = available_variants(models_dir)
    if found:
        hint = f"available: {', '.join(found)}"
    else:
        hint = f"no trained variants under {models_dir}/ (run `dvc repro`, or pass --models-dir)"
    return ConfigError(f"{problem}; {hint}")


def _read_card(path: Path) -> dict:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise ConfigError(f"{path} does not hold a model card (a JSON object)")
    missing = [key for key in _CARD_KEYS if key not in card]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}; retrain the variant (dvc repro)")
    return card


def _raw_shape(card: dict, path: Path) -> tuple[int, int, int]:
    shape = card["raw_image_shape"]
    if (
        not isinstance(shape, list) or len(shape) != 3
        or not all(isinstance(v, int) and v > 0 for v in shape) or shape[2] not in (1, 3)
    ):
        raise ConfigError(f"{path}: raw_image_shape must be [height, width, 1 or 3], got {shape}")
    if max(shape[:2]) > MAX_IMAGE_SIDE:  # checked before anything of that size is allocated
        raise ConfigError(f"{path}: raw_image_shape {shape} has a side over {MAX_IMAGE_SIDE} "
                          f"pixels; the card is damaged or not from this pipeline")
    return tuple(shape)


def _crop_to_aspect_ratio(card: dict, path: Path) -> bool:
    """How the prepare stage fitted image files to size: ``image_loading`` of the card."""
    loading = card["image_loading"]
    if loading is None:
        return False
    if not isinstance(loading, dict) or not isinstance(
        loading.get("crop_to_aspect_ratio"), bool
    ):
        raise ConfigError(f"{path}: image_loading must say crop_to_aspect_ratio (true or "
                          f"false); retrain the variant (dvc repro)")
    if loading.get("resample", "bilinear") != "bilinear":
        raise ConfigError(f"{path}: image_loading.resample {loading['resample']!r} is not the "
                          f"bilinear resize predict applies; retrain the variant (dvc repro)")
    return loading["crop_to_aspect_ratio"]


def _class_names(card: dict, path: Path) -> tuple[str, ...]:
    names = card["class_names"]
    if (
        not isinstance(names, list) or len(names) < 2
        or not all(isinstance(n, str) for n in names) or len(names) != card["num_classes"]
    ):
        raise ConfigError(f"{path}: class_names must list num_classes (>= 2) names")
    return tuple(names)


def _icons(card: dict, data_card: str | Path | None) -> dict[str, str]:
    """``class_icons`` ({class name: icon}) of the model card, else of a data card with the
    same class names; optional, display only."""
    icons = card.get("class_icons")
    if not isinstance(icons, dict) and data_card is not None:
        try:
            data = json.loads(Path(data_card).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if isinstance(data, dict) and data.get("class_names") == card["class_names"]:
            icons = data.get("class_icons")
    if not isinstance(icons, dict):
        return {}
    return {k: v for k, v in icons.items() if isinstance(k, str) and isinstance(v, str)}


def load_predictor(
    models_dir: str | Path, variant: str, data_card: str | Path | None = None
) -> Predictor:
    """Load ``models_dir/<variant>``: its saved model and its model card.

    How files become model inputs comes from the model card alone. ``data_card`` (the
    prepare stage's ``data_card.json``) is read only for ``class_icons`` the model card
    lacks, and only when its class names match. Raises :class:`ConfigError` with one line:
    naming the available variants, or the card and its missing or impossible key.
    """
    models_dir = Path(models_dir)
    if not variant or variant in (".", "..") or "/" in variant or "\\" in variant:
        raise _unknown_variant(models_dir, variant, f"`{variant}` is not a variant name")
    folder = models_dir / variant
    card_path, model_path = folder / CARD_NAME, folder / MODEL_NAME
    if not card_path.is_file():
        raise _unknown_variant(models_dir, variant, f"no trained variant `{variant}` "
                               f"({card_path} not found)")
    if not model_path.is_file():
        raise _unknown_variant(models_dir, variant, f"variant `{variant}` has no saved model "
                               f"({model_path} not found)")
    card = _read_card(card_path)
    raw_shape = _raw_shape(card, card_path)
    class_names = _class_names(card, card_path)
    crop_to_aspect_ratio = _crop_to_aspect_ratio(card, card_path)

    model = _load_model(model_path)
    _check_card_matches_model(model, raw_shape, class_names, card_path, model_path)
    return Predictor(
        variant=variant,
        model=model,
        class_names=class_names,
        raw_shape=raw_shape,
        crop_to_aspect_ratio=crop_to_aspect_ratio,
        icons=_icons(card, data_card),
    )


def _load_model(model_path: Path):
    import zipfile

    from cnnpipe.evaluate.inference import load_trained_model

    # Keras reports a damaged archive as "File not found" about a file that exists.
    if not zipfile.is_zipfile(model_path):
        raise ConfigError(f"{model_path} is corrupt (not a complete .keras archive, truncated or "
                          "overwritten?): restore it with `dvc checkout` or retrain (dvc repro)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = load_trained_model(model_path)
        except CnnpipeError:
            raise
        except (ValueError, TypeError, OSError, KeyError) as exc:
            # A damaged or foreign file: one line, not Keras' traceback.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"cannot load {model_path}: {first}") from None
    for warning in caught:  # loaded after all: what Keras had to say still matters
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    return model


def _check_card_matches_model(model, raw_shape, class_names, card_path, model_path) -> None:
    """A card from another run than its model would feed it the wrong pixels or name the
    wrong classes: refused in one line instead of Keras' shape traceback."""
    takes = tuple(model.input_shape[1:])
    if len(takes) != len(raw_shape) or any(t not in (None, r) for t, r in zip(takes, raw_shape)):
        shown = "x".join("?" if t is None else str(t) for t in takes)
        raise ConfigError(
            f"{card_path} says the model takes {'x'.join(map(str, raw_shape))} images, but "
            f"{model_path} takes {shown}: the two are from different runs; retrain (dvc repro)")
    units = model.output_shape[-1]
    if units != (1 if len(class_names) == 2 else len(class_names)):
        raise ConfigError(
            f"{card_path} names {len(class_names)} classes, but {model_path} has {units} "
            "outputs: the two are from different runs; retrain (dvc repro)")


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
    predictor: Predictor, files: list[str | Path]
) -> tuple[list[Prediction], np.ndarray]:
    """A :class:`Prediction` per file, in order, and the model inputs of the decodable ones.

    All decodable files go through the model in one ``predict`` call. The inputs (N, H, W, C),
    the raw uint8 pixels the model took, are in the order of the successful predictions.
    """
    from cnnpipe.evaluate.metrics import as_class_probabilities
    from cnnpipe.evaluate.inference import predict_outputs

    predictions = [Prediction(file=str(f)) for f in files]
    raws, decoded = [], []
    for prediction, source in zip(predictions, files, strict=True):
        prediction.error = _not_a_file(source)
        if prediction.error:
            continue
        try:
            raws.append(read_image(source, predictor.raw_shape, predictor.crop_to_aspect_ratio))
        except ImageDecodeError as exc:
            prediction.error = exc.reason
            continue
        decoded.append(prediction)
    if not decoded:
        return predictions, np.zeros((0, *predictor.raw_shape), dtype=np.uint8)
    inputs = np.stack(raws)
    probabilities = as_class_probabilities(predict_outputs(predictor.model, inputs))
    if probabilities.shape != (len(decoded), len(predictor.class_names)):
        raise ConfigError(
            f"`{predictor.variant}` outputs {probabilities.shape[1:]} values per image but its "
            f"card names {len(predictor.class_names)} classes; retrain it (dvc repro)"
        )
    for prediction, row in zip(decoded, probabilities, strict=True):
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
    predictor: Predictor, predictions: list[Prediction], inputs: np.ndarray, out: str | Path
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
    layer = find_gradcam_layer(predictor.model)
    heatmaps = gradcam_heatmaps(predictor.model, inputs, class_indices=classes, layer=layer)
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
    icons: dict[str, str] | None = None,
    fancy: bool = True,
) -> str:
    """What a person reads for one classified file: verdict line, then one line per class.

    ``fancy`` False swaps the coloured markers for ASCII ones and leaves icons out.
    """
    icons = icons if fancy and icons else {}
    band = confidence_band(prediction.confidence)
    marker = band.marker if fancy else band.ascii_marker

    def label(index: int) -> str:
        name = class_names[index]
        return f"{icons[name]} {name}" if name in icons else name

    lines = [
        f"{prediction.file}: {marker} {band.name}: {label(prediction.predicted)} "
        f"({prediction.confidence:.1%})"
    ]
    shown = prediction.ranking(top)
    width = max(len(label(i)) for i in shown)
    for i in shown:
        p = float(prediction.probabilities[i])
        bar = "#" * int(round(p * 20))
        lines.append(f"    {label(i):<{width}}  {p:6.1%}  {bar}".rstrip())
    if prediction.gradcam is not None:
        lines.append(f"    Grad-CAM: {prediction.gradcam}")
    return "\n".join(lines)
