"""One export of a trained variant: write every format, measure parity, then publish.

Everything is written into a temporary folder beside ``models/<variant>/export``; it takes
that name only when every parity bound holds, and the reports are written after it. A failed
bound, a failed conversion or a kill leaves the previous export (if any) and no report of
the failed one: never a half-written folder that a model server could pick up.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cnnpipe.core import layout
from cnnpipe.core.errors import DataError
from cnnpipe.core.runner import quiet_native_logs
from cnnpipe.core.shards import ShardSet
from cnnpipe.export import card as export_card
from cnnpipe.export import formats, parity, savedmodel
from cnnpipe.export.report import report_document, write_reports
from cnnpipe.inference import TrainedVariant

CARD_FILE = "model_card.json"


@dataclass(frozen=True)
class ExportRequest:
    """What to export and where: the stage fills it from layout, ``cnnpipe export`` from its
    options."""

    model_folder: Path  # models/<variant>, as train wrote it
    export_folder: Path  # models/<variant>/export
    test_split: Path  # the prepared test split (uint8 shards), for the parity checks
    report_json: Path
    report_markdown: Path
    metrics: Path  # the evaluate stage's headline metrics, copied into the card
    version: int = 1
    parity_images: int = 256

    @classmethod
    def for_variant(cls, variant: str, version: int, parity_images: int,
                    models_dir: str | Path = "models") -> ExportRequest:
        model_folder = Path(models_dir) / variant
        return cls(model_folder=model_folder,
                   export_folder=model_folder / layout.EXPORT_DIR,
                   test_split=layout.split_dir("test"),
                   report_json=layout.export_report(variant, ".json"),
                   report_markdown=layout.export_report(variant, ".md"),
                   metrics=layout.eval_metrics(variant),
                   version=version, parity_images=parity_images)


def export_variant(request: ExportRequest) -> dict:
    """Export ``request.model_folder``; returns the parity report (already written).

    TensorFlow's, tf2onnx's and LiteRT's native log lines are held back meanwhile.
    """
    with quiet_native_logs():
        trained = TrainedVariant.load(request.model_folder)
        test = ShardSet(request.test_split)
        if len(test) == 0:
            raise DataError(f"{request.test_split} holds no images to check the export against")
        if tuple(test.image_shape) != trained.input_spec.shape:
            raise DataError(f"{request.test_split} holds {_shape(test.image_shape)} images but "
                            f"{request.model_folder} takes {_shape(trained.input_spec.shape)}:"
                            " they are from different runs (dvc repro)")
        with _staged_folder(request.export_folder) as staging:
            paths, interfaces = _write_formats(trained, staging, request.version)
            measured = parity.measure(trained, paths, test, request.parity_images)
            parity.check_bounds(measured)
            sizes = _sizes(paths)
            _write_card(trained, request, staging, paths, interfaces)
    report = report_document(trained.variant, request.version, measured, sizes)
    write_reports(request.report_json, request.report_markdown, report)
    return report


def _write_formats(trained: TrainedVariant, staging: Path, version: int):
    """Write the SavedModel, ONNX and both LiteRT files; their paths and interfaces."""
    folder = savedmodel.savedmodel_dir(staging, trained.variant, version)
    savedmodel.write_savedmodel(trained, folder)
    wrapper = formats.probability_model(trained)
    paths = parity.ExportedPaths(
        savedmodel=folder,
        onnx=formats.write_onnx(wrapper, staging / formats.ONNX_FILE),
        litert_float=formats.write_litert(wrapper, staging / formats.LITERT_FLOAT_FILE,
                                          quantized=False),
        litert_dynamic_range=formats.write_litert(
            wrapper, staging / formats.LITERT_QUANTIZED_FILE, quantized=True),
    )
    interfaces = {
        "savedmodel": {"signatures": savedmodel.signature_description(
            trained.input_spec, trained.num_classes)},
        "onnx": formats.onnx_description(paths.onnx),
        "litert_float": formats.litert_description(paths.litert_float),
        "litert_dynamic_range": formats.litert_description(paths.litert_dynamic_range),
    }
    return paths, interfaces


def _sizes(paths: parity.ExportedPaths) -> dict[str, int]:
    savedmodel_bytes = export_card.size_in_bytes(paths.savedmodel)
    return {"savedmodel_uint8": savedmodel_bytes, "savedmodel_images": savedmodel_bytes,
            "onnx": export_card.size_in_bytes(paths.onnx),
            "litert_float": export_card.size_in_bytes(paths.litert_float),
            "litert_dynamic_range": export_card.size_in_bytes(paths.litert_dynamic_range)}


def _write_card(trained: TrainedVariant, request: ExportRequest, staging: Path,
                paths: parity.ExportedPaths, interfaces: dict) -> None:
    def entry(path: Path, kind: str, interface: dict, quantization: str = "none"):
        return export_card.ExportedFile(
            name=path.relative_to(staging).as_posix(), format=kind, quantization=quantization,
            bytes=export_card.size_in_bytes(path), interface=interface)

    files = (
        entry(paths.savedmodel, "savedmodel", interfaces["savedmodel"]),
        entry(paths.onnx, "onnx", interfaces["onnx"]),
        entry(paths.litert_float, "litert", interfaces["litert_float"]),
        entry(paths.litert_dynamic_range, "litert", interfaces["litert_dynamic_range"],
              quantization="dynamic_range"),
    )
    export_card.ExportCard(
        variant=trained.variant, architecture=trained.card.architecture,
        class_names=trained.class_names, export_version=request.version,
        input=export_card.image_preparation(trained), files=files,
        params_hash=export_card.params_hash(trained.card.config),
        git_revision=export_card.git_revision(),
        metrics=export_card.read_metrics(request.metrics),
        parity_report=request.report_json.as_posix(),
    ).write(staging / CARD_FILE)


@contextmanager
def _staged_folder(target: Path):
    """A fresh temporary folder beside ``target`` that replaces it when the block succeeds
    and is removed when it fails. Temporaries an earlier killed run left are swept first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    for stale in target.parent.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; a model server may run as another user
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent)) / "old"
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _shape(shape) -> str:
    return "x".join(map(str, shape))
