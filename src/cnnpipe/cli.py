"""The ``cnnpipe`` command: ``cnnpipe <subcommand> ...``.

Each subcommand is a function ``add_<name>_parser(subparsers)`` listed in ``SUBCOMMANDS``; it
adds its parser and sets ``handler``, a function taking the parsed arguments and returning the
exit status. Handlers import their heavy modules (TensorFlow) themselves, so ``cnnpipe --help``
stays fast.

Exit status: 0 success; 1 the command ran but some of its work failed (``predict``: a file
could not be classified); 2 usage or configuration errors (bad arguments, unknown variant).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cnnpipe.export.command import add_export_parser
from cnnpipe.lr_find import add_lr_find_parser
from cnnpipe.report import add_report_parser
from cnnpipe.serve import add_serve_parser
from cnnpipe.core.runner import quiet_native_logs


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --- predict ------------------------------------------------------------------------------

PREDICT_DESCRIPTION = """\
Classify image files with a trained variant.

Each file is decoded and fitted to what the training data looked like (a colour photo
becomes grayscale for Fashion-MNIST, and is resized to the prepared images' size), then
normalized exactly as in training and evaluation. All readable files are classified in one
batch. For each file the command prints the most probable class, its confidence with a
feedback band, and the probability of every class:

  super confident   above 90%
  pretty sure       above 70%
  I think           above 50%
  not very sure     otherwise

A file that cannot be classified (missing, empty, not an image, truncated, too large) gets
an error line on stderr (or an "error" field with --json), and so does a folder, which is
skipped rather than read into (`photos/*.jpg` names its files); the other files are still
classified.

Exit status: 0 every file classified; 1 at least one file failed; 2 usage or model error
(for example an unknown variant)."""

PREDICT_EPILOG = """\
examples:
  cnnpipe predict shoe.jpg --model simple_cnn
  cnnpipe predict photos/*.jpg --model residual_cnn --top 3
  cnnpipe predict shoe.jpg --model simple_cnn --json
  cnnpipe predict shoe.jpg boot.png --model simple_cnn --gradcam cam.png
      (writes cam_1.png for shoe.jpg and cam_2.png for boot.png)"""


def add_predict_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify image files with a trained variant",
        description=PREDICT_DESCRIPTION,
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE",
        help="image files (JPEG, PNG, BMP, GIF, WebP, TIFF)",
    )
    parser.add_argument(
        "--model", "-m", required=True, metavar="VARIANT",
        help="the trained variant, a folder under --models-dir holding model_card.json and "
             "model.keras (the names under `models:` in params.yaml, e.g. simple_cnn)",
    )
    parser.add_argument(
        "--models-dir", default="models", metavar="DIR",
        help="where the trained variants are (default: %(default)s)",
    )
    parser.add_argument(
        "--top", type=_positive_int, metavar="K",
        help="show only the K most probable classes (default: every class, most probable "
             "first); also limits the probabilities in --json",
    )
    parser.add_argument(
        "--json", action="store_true",
        help="print one JSON list instead of text: per file {file, predicted_class, "
             "confidence, band, probabilities: {class: p}} or {file, error}",
    )
    parser.add_argument(
        "--gradcam", metavar="OUT.png",
        help="also save a Grad-CAM overlay (where the model looked for its predicted class) "
             "as PNG: to OUT.png for one IMAGE; for several, to OUT_1.png, OUT_2.png, ... "
             "numbered by the IMAGE's position on the command line",
    )
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    import json

    from cnnpipe.inference import TrainedVariant
    from cnnpipe.predict import (
        BANDS,
        can_show,
        classify_files,
        format_prediction,
        prediction_record,
        save_gradcams,
        variant_folder,
    )

    status = EXIT_OK
    with quiet_native_logs():
        trained = TrainedVariant.load(variant_folder(args.models_dir, args.model))
        predictions, inputs = classify_files(trained, args.images)
        if args.gradcam:
            try:
                save_gradcams(trained, predictions, inputs, args.gradcam)
            except (ValueError, OSError) as exc:
                print(f"error: Grad-CAM not saved: {exc}", file=sys.stderr)
                status = EXIT_FAILED
    if not all(p.ok for p in predictions):
        status = EXIT_FAILED

    names = trained.class_names
    if args.json:
        records = [prediction_record(p, names, args.top) for p in predictions]
        print(json.dumps(records, indent=2))
        return status

    fancy = can_show("".join(b.marker for b in BANDS), getattr(sys.stdout, "encoding", None))
    for prediction in predictions:
        if prediction.ok:
            print(format_prediction(prediction, names, args.top, fancy))
        else:
            sys.stdout.flush()  # keep stdout and stderr lines in file order on a terminal
            print(f"error: {prediction.file}: {prediction.error}", file=sys.stderr)
            sys.stderr.flush()
    failed = sum(not p.ok for p in predictions)
    if failed:
        print(f"{failed} of {len(predictions)} files could not be classified", file=sys.stderr)
    return status


# --- check-images ---------------------------------------------------------------------

CHECK_IMAGES_DESCRIPTION = """\
List the FIFOs, devices and sockets in an image folder, directly or through a file link,
and its broken links.

DVC hashes the image folder as the prepare stage's dependency before any stage runs, and
reads every file and file link in it: a link to /dev/zero or a FIFO makes `dvc status` and
`dvc repro` hang without a word, and a broken link stops them with "[Errno 2] No such file or
directory", before the prepare stage could refuse either. `make repro` runs this check first
on an image-folder source (through `cnnpipe preflight`). (The prepare stage itself never reads
such entries: it lists them in reports/data_quality.md.)

Exit status: 0 none found; 1 some found (each printed on its own line); 2 the folder is
missing."""


def add_check_images_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-images",
        help="find special files in the image folder that would hang DVC's hashing",
        description=CHECK_IMAGES_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "folder", nargs="?", metavar="FOLDER",
        help="the folder to check (default: data.image_folder.path in --params)",
    )
    _add_params_option(parser, "where to read the default folder from")
    parser.set_defaults(handler=run_check_images)


def _add_params_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help=f"{what} (default: %(default)s)")


def _image_folder_setting(params_file: str) -> str:
    from pathlib import Path

    from cnnpipe.params.schema import ImageFolder, read_yaml

    default = ImageFolder().path
    if not Path(params_file).is_file():
        return default
    # Read as DVC does, without validating the rest: a typo elsewhere is the params stage's
    # to report, and this check must still run.
    raw = read_yaml(params_file)
    section = raw.get("data") if isinstance(raw, dict) else None
    folder = section.get("image_folder") if isinstance(section, dict) else None
    path = folder.get("path") if isinstance(folder, dict) else None
    return path if isinstance(path, str) and path else default


def run_check_images(args: argparse.Namespace) -> int:
    return _report_unhashable(args.folder or _image_folder_setting(args.params))


def _report_unhashable(folder: str) -> int:
    """What would stop DVC hashing ``folder``: entries it would read forever, and broken links
    (DVC stops at the first with "[Errno 2] No such file or directory")."""
    from cnnpipe.data.folders import find_special_files

    found = [(path, f"{kind}; DVC would read it forever when hashing {folder}")
             for path, kind in find_special_files(folder)]
    found += [(path, f"a broken link (to {os.readlink(path)}); DVC stops hashing {folder} at it")
              for path in _broken_links(folder)]
    for path, why in sorted(found):
        print(f"{path}: {why}", file=sys.stderr)
    if found:
        print(f"remove the {len(found)} entr{'y' if len(found) == 1 else 'ies'} above from "
              f"{folder} (or move them out of it) before running dvc", file=sys.stderr)
        return EXIT_FAILED
    print(f"{folder}: no FIFOs, devices, sockets or broken links; DVC can hash it")
    return EXIT_OK


def _broken_links(folder: str) -> list[str]:
    """Links whose target is gone (the prepare stage lists them in its report and reads none)."""
    return sorted(os.path.join(current, name)
                  for current, _, names in os.walk(folder) for name in names
                  if os.path.islink(os.path.join(current, name))
                  and not os.path.exists(os.path.join(current, name)))


# --- preflight ----------------------------------------------------------------------

PREFLIGHT_DESCRIPTION = """\
What `make repro` runs before `dvc repro`: validate params.yaml in full (as the params stage
does), so a missing file or an empty `models:` is one line rather than DVC's `foreach` error;
then, only when data.source is image_folder, check that the folder exists and holds no FIFO,
device, socket or broken link (see check-images).

Exit status: 0 ready for dvc repro; 1 special files found; 2 a params or folder problem."""

FOLDER_HELP = 'docs/data.md, "Bring your own images"'


def add_preflight_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "preflight",
        help="check params.yaml and the data source before dvc repro (run by make repro)",
        description=PREFLIGHT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_params_option(parser, "the params file to check")
    parser.set_defaults(handler=run_preflight)


def run_preflight(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnpipe.core.errors import ConfigError
    from cnnpipe.params import load_params

    if not Path(args.params).is_file():
        raise ConfigError(f"{args.params} not found: run from the repository root, which holds "
                          "params.yaml and dvc.yaml")
    _check_keys_dvc_reads(args.params)
    params = load_params(args.params)
    source = params.data.source
    if source != "image_folder":
        print(f"preflight: {len(params.models)} variants; data.source is {source}, "
              "no image folder to check")
        return EXIT_OK
    folder = params.data.image_folder.path
    if not Path(folder).is_dir():
        raise ConfigError(
            f"data.source is image_folder but data.image_folder.path ({folder}) is not a "
            f"folder: put <class>/<image> files there and `dvc add` it ({FOLDER_HELP})")
    return _report_unhashable(folder)


def _check_keys_dvc_reads(params_file: str) -> None:
    """dvc.yaml interpolates some params (``${models}``, ``${data.input}``) while it parses,
    before any stage runs: a missing one is DVC's multi-line parse error unless named here."""
    import re
    from pathlib import Path

    from cnnpipe.core.errors import ConfigError
    from cnnpipe.params.schema import read_yaml

    dvc_yaml = Path(params_file).with_name("dvc.yaml")
    if not dvc_yaml.is_file():
        return
    raw = read_yaml(params_file)
    for name in sorted(set(re.findall(r"\$\{\s*([A-Za-z_][\w.]*)\s*\}", dvc_yaml.read_text()))):
        if name in ("key", "item") or name.startswith("item."):
            continue
        value = raw
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise ConfigError(f"{params_file}: missing `{name}`, which dvc.yaml reads "
                                  "(docs/troubleshooting.md)")
            value = value[part]


SUBCOMMANDS = [add_predict_parser, add_report_parser, add_check_images_parser,
               add_preflight_parser, add_lr_find_parser, add_serve_parser,
               add_export_parser]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnnpipe")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnpipe",
        description="cnnpipe: a reproducible CNN image-classification pipeline (DVC + Keras). "
                    "`dvc repro` trains the variants; these commands use them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cnnpipe`` with ``argv`` (default: the process's arguments); the exit status."""
    from cnnpipe.core.errors import CnnpipeError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except CnnpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
