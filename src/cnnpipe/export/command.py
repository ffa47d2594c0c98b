"""``cnnpipe export VARIANT``: the export stage's code, for a variant picked after ``compare``.

DVC's ``foreach`` is resolved before any stage runs, so ``export.variants`` in params.yaml
names its variants in advance; this command exports any trained variant on demand, with
the same checks, into the same places.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Export a trained variant for serving, as the export@<variant> stage does:

  models/<variant>/export/savedmodel/<variant>/<version>/   SavedModel (TF Serving layout):
        serving_default takes encoded images (JPEG, PNG, ...), serving_uint8 uint8 pixels
  models/<variant>/export/model.onnx                        ONNX, uint8 pixels
  models/<variant>/export/model_float.tflite                LiteRT, float
  models/<variant>/export/model_dynamic_range.tflite        LiteRT, int8 weights
  models/<variant>/export/model_card.json                  classes, inputs, provenance

Every file is compared with model.keras on test images from data/prepared/test; when one
is outside its bound the command fails and writes nothing (the previous export stays). The
figures go to reports/export/<variant>.json and .md. The images must be upright: the
SavedModel cannot apply EXIF orientation (docs/export.md).

--version and --parity-images default to params.yaml's `export:` section.

Exit status: 0 exported; 2 an unknown variant, a bad option or a parity bound missed."""


def add_export_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained variant: SavedModel for TF Serving, ONNX, LiteRT, parity checks",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("variant", metavar="VARIANT",
                        help="a trained variant under --models-dir (e.g. regularized_cnn)")
    parser.add_argument("--models-dir", default="models", metavar="DIR",
                        help="where the trained variants are (default: %(default)s)")
    parser.add_argument("--version", type=int, metavar="N",
                        help="the SavedModel version folder, 1 or more (TF Serving serves "
                             "the highest it finds)")
    parser.add_argument("--parity-images", type=int, metavar="N",
                        help="test images each format is compared on, at least 200")
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help="where the defaults are read from (default: %(default)s)")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from cnnpipe.export.exporter import ExportRequest, export_variant
    from cnnpipe.export.report import summary_lines
    from cnnpipe.predict import variant_folder

    settings = _settings(args)
    folder = variant_folder(args.models_dir, args.variant)
    request = ExportRequest.for_variant(args.variant, settings.version, settings.parity_images,
                                        models_dir=folder.parent)
    report = export_variant(request)  # holds back TensorFlow's native log lines itself
    for line in summary_lines(report):
        print(f"{args.variant}: {line}")
    print(f"{args.variant}: exported to {request.export_folder}; report {request.report_markdown}")
    return 0


def _settings(args: argparse.Namespace):
    """params.yaml's `export:` values (schema defaults without the file or the section),
    with the options given on the command line over them, validated by the same schema."""
    from pydantic import ValidationError

    from cnnpipe.core.errors import ConfigError
    from cnnpipe.params.schema import Export, read_yaml

    raw = read_yaml(args.params) if Path(args.params).is_file() else {}
    section = raw.get("export") if isinstance(raw, dict) else None
    values = {key: section[key] for key in ("version", "parity_images")
              if isinstance(section, dict) and key in section}
    options = {"version": args.version, "parity_images": args.parity_images}
    given = {key: value for key, value in options.items() if value is not None}
    try:
        return Export(**{**values, **given})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = str(error["loc"][0]) if error["loc"] else "export"
        where = f"--{key.replace('_', '-')}" if key in given else f"{args.params}: export.{key}"
        raise ConfigError(f"{where}: {error['msg'].lower()}; got {error.get('input')!r}") from None
