"""Stage export@<variant>: the files a model server or a device runs, checked against model.keras.

Writes models/<variant>/export/ (SavedModel in TF Serving's layout, ONNX, LiteRT float and
dynamic-range quantized, the export card) and reports/export/<variant>.json and .md (parity
of every format, file sizes, the quantized model's full-test accuracy). A format outside its
parity bound stops the stage with one line and nothing written (cnnpipe.export.parity).

settings: resolved/export.json (SavedModel version, parity sample size); the variant list is
params.yaml's export.variants, which dvc.yaml's foreach reads
"""

import sys
import time

from cnnpipe.core import layout
from cnnpipe.core.runner import run
from cnnpipe.core.settings import read_settings
from cnnpipe.export.exporter import ExportRequest, export_variant
from cnnpipe.export.report import summary_lines


def main(variant: str) -> None:
    settings = read_settings(layout.resolved("export")).export
    request = ExportRequest.for_variant(variant, settings.version, settings.parity_images)
    start = time.perf_counter()
    report = export_variant(request)
    for line in summary_lines(report):
        print(f"{variant}: {line}")
    print(f"{variant}: exported to {request.export_folder} in "
          f"{time.perf_counter() - start:.0f} s; report {request.report_markdown}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/export.py VARIANT")
    run(main, sys.argv[1])
