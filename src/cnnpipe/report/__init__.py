"""``cnnpipe report``: what changed between a git revision and the workspace, as Markdown.

The report holds the changed params (``dvc params diff``), the headline metrics of every
variant that changed, with old, new and delta (``dvc metrics diff``, plus the training
record ``metrics/train/<variant>.json``, which is not a DVC metric), whether each new
accuracy beats the noise of training (as one more retrain, against the accuracies of retrains
with other seeds that ``bench/training_noise.py`` records at the base,
``reports/training_noise.json``, their spread no smaller than the test set's own), whether
the two models differ on the same test images (McNemar's exact test on the per-image
predictions that evaluate stores in ``reports/predictions/``, with a 95% interval for the
paired difference), the workspace's leaderboard and transfer table, and PNG renderings of
the plots whose data changed (``dvc plots diff --json``). Images go to a folder beside the report
(``report.md`` -> ``report_assets/``) and are linked relatively, so the pair can be uploaded
as a CI artifact or opened from a checkout.

One module a job: ``revisions`` (git), ``dvc_reading`` (DVC's diffs), ``changes`` (params
and metrics as rows), ``significance`` (McNemar, Holm), ``noise`` (the training-noise record
and its test), ``verdict`` (the two per variant), ``plots``, ``markdown`` (rendering, no I/O)
and ``command`` (writing, the command line). Parsing and rendering take DVC's JSON and return
plain data or text, so they are tested without running DVC.
"""

from cnnpipe.report.changes import changed_params, variant_metrics
from cnnpipe.report.command import MAX_PLOTS, add_report_parser, replace_assets, run_report, write_report
from cnnpipe.report.dvc_reading import Collected, collect, find_dvc
from cnnpipe.report.markdown import render_markdown
from cnnpipe.report.noise import (
    NOISE_RECORD,
    noise_p_value,
    read_noise_record,
    settings_fingerprint,
    write_noise_record,
)
from cnnpipe.report.plots import PlotChange, changed_plots
from cnnpipe.report.revisions import ReportError
from cnnpipe.report.significance import holm, paired_accuracy_change, significance
from cnnpipe.report.verdict import judge_changes

__all__ = [
    "MAX_PLOTS", "NOISE_RECORD", "Collected", "PlotChange", "ReportError", "add_report_parser",
    "changed_params", "changed_plots", "collect", "find_dvc", "holm", "judge_changes",
    "noise_p_value", "paired_accuracy_change", "read_noise_record", "render_markdown",
    "replace_assets", "run_report", "settings_fingerprint", "significance", "variant_metrics",
    "write_noise_record", "write_report",
]
