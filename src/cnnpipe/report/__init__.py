"""``cnnpipe report``: what changed between a git revision and the workspace, as Markdown.

The report holds the changed params (``dvc params diff``), the headline metrics of every
variant that changed, with old, new and delta (``dvc metrics diff``, plus the training
record ``metrics/train/<variant>.json``, which is not a DVC metric), whether each accuracy
change is more than noise (McNemar's exact test on the per-image predictions that evaluate
stores in ``reports/predictions/``, with a 95% interval for the paired difference), the
workspace's leaderboard and transfer table, and PNG renderings of the plots whose data
changed (``dvc plots diff --json``). Images go to a folder beside the report
(``report.md`` -> ``report_assets/``) and are linked relatively, so the pair can be uploaded
as a CI artifact or opened from a checkout.

One module a job: ``revisions`` (git), ``dvc_reading`` (DVC's diffs), ``changes`` (params
and metrics as rows), ``significance``, ``plots``, ``markdown`` (rendering, no I/O) and
``command`` (writing, the command line). Parsing and rendering take DVC's JSON and return
plain data or text, so they are tested without running DVC.
"""

from cnnpipe.report.changes import changed_params, variant_metrics
from cnnpipe.report.command import MAX_PLOTS, add_report_parser, replace_assets, run_report, write_report
from cnnpipe.report.dvc_reading import Collected, collect, find_dvc
from cnnpipe.report.markdown import render_markdown
from cnnpipe.report.plots import PlotChange, changed_plots
from cnnpipe.report.revisions import ReportError
from cnnpipe.report.significance import paired_accuracy_change, significance

__all__ = [
    "MAX_PLOTS", "Collected", "PlotChange", "ReportError", "add_report_parser", "changed_params",
    "changed_plots", "collect", "find_dvc", "paired_accuracy_change", "render_markdown",
    "replace_assets", "run_report", "significance", "variant_metrics", "write_report",
]
