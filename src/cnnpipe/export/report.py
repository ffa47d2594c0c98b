"""The parity report: ``reports/export/<variant>.json`` and a readable ``.md`` table.

A tracked report, not a DVC metric: ``dvc metrics show`` stays the headline numbers.
"""

from __future__ import annotations

from pathlib import Path

from cnnpipe.core.io import write_json, write_text
from cnnpipe.export.parity import MAX_DIFF, MIN_AGREEMENT

# What each measured row is, in words, for the Markdown table and the stage's summary lines.
LABELS = {
    "savedmodel_uint8": "SavedModel serving_uint8 (uint8 pixels)",
    "savedmodel_images": "SavedModel serving_default (PNG bytes, stored size)",
    "onnx": "ONNX (onnxruntime)",
    "litert_float": "LiteRT float",
    "litert_dynamic_range": "LiteRT dynamic-range quantized",
}


def report_document(variant: str, version: int, measured: dict, sizes: dict[str, int]) -> dict:
    """The JSON report: each format's figures with its bound and file size, the other sizes
    and the quantized model's full-test accuracy."""
    formats = {}
    for name, figures in measured["formats"].items():
        bound = ({"max_abs_diff": MAX_DIFF[name]} if name in MAX_DIFF
                 else {"top1_agreement": MIN_AGREEMENT[name]})
        formats[name] = {**figures, "bound": bound, "bytes": sizes[name]}
    return {
        "variant": variant,
        "export_version": version,
        "reference": "model.keras through TrainedVariant.predict",
        "sample": measured["sample"],
        "formats": formats,
        "other_sizes": {
            "reference": "cnnpipe predict (Pillow decode and resize, then model.keras)",
            "bound": {"top1_agreement": MIN_AGREEMENT["other_sizes"]},
            "sizes": measured["other_sizes"],
        },
        "quantized_full_test": measured["quantized_full_test"],
    }


def summary_lines(report: dict) -> list[str]:
    """One line per format (and per other size), as the stage prints them."""
    lines = []
    for name, row in report["formats"].items():
        lines.append(f"{name}: max |diff| {row['max_abs_diff']:.2e}, top-1 agreement "
                     f"{row['top1_agreement']:.4f}, {_size(row['bytes'])} "
                     f"(bound: {_bound(row['bound'])})")
    for row in report["other_sizes"]["sizes"]:
        lines.append(f"savedmodel_images at {row['size']}: max |diff| "
                     f"{row['max_abs_diff']:.2e}, top-1 agreement {row['top1_agreement']:.4f} "
                     f"over {row['images']} PNGs (bound: "
                     f"{_bound(report['other_sizes']['bound'])})")
    full = report["quantized_full_test"]
    lines.append(f"litert_dynamic_range on all {full['images']} test images: accuracy "
                 f"{full['litert_dynamic_range_accuracy']:.4f} against model.keras "
                 f"{full['keras_accuracy']:.4f} ({full['accuracy_change']:+.4f})")
    return lines


def markdown(report: dict) -> str:
    sample = report["sample"]
    lines = [
        f"# Export parity: {report['variant']} (version {report['export_version']})",
        "",
        f"Against `model.keras` on {sample['images']} of {sample['of']} test images "
        f"({sample['chosen']}), at the stored size and mode.",
        "",
        "| format | largest probability difference | top-1 agreement | size | bound |",
        "|---|---:|---:|---:|---|",
    ]
    for name, row in report["formats"].items():
        lines.append(f"| {LABELS[name]} | {row['max_abs_diff']:.2e} | "
                     f"{row['top1_agreement']:.4f} | {_size(row['bytes'])} | "
                     f"{_bound(row['bound'])} |")
    other = report["other_sizes"]
    lines += ["", "PNGs at other sizes through `serving_default`, against `cnnpipe predict` "
              "(Pillow's resize):", "",
              "| size (HxW) | images | largest probability difference | top-1 agreement | bound |",
              "|---|---:|---:|---:|---|"]
    for row in other["sizes"]:
        lines.append(f"| {row['size']} | {row['images']} | {row['max_abs_diff']:.2e} | "
                     f"{row['top1_agreement']:.4f} | {_bound(other['bound'])} |")
    full = report["quantized_full_test"]
    lines += ["", f"Dynamic-range quantized LiteRT on the whole test set ({full['images']} "
              f"images): accuracy {full['litert_dynamic_range_accuracy']:.4f} against "
              f"{full['keras_accuracy']:.4f} for `model.keras` ({full['accuracy_change']:+.4f});"
              f" top-1 agreement {full['top1_agreement']:.4f}.", ""]
    return "\n".join(lines)


def write_reports(json_path: Path, markdown_path: Path, report: dict) -> None:
    write_json(json_path, report)
    write_text(markdown_path, markdown(report))


def _bound(bound: dict) -> str:
    if "max_abs_diff" in bound:
        return f"diff <= {bound['max_abs_diff']:g}"
    return f"agreement >= {bound['top1_agreement']:g}"


def _size(size: int) -> str:
    if size >= 2**20:
        return f"{size / 2**20:.1f} MiB"
    return f"{size / 2**10:.1f} KiB"
