"""``cnnpipe report``: collect, render and write the report and its images atomically."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from cnnpipe.core.io import write_text
from cnnpipe.report.changes import changed_params, variant_metrics
from cnnpipe.report.dvc_reading import collect
from cnnpipe.report.markdown import render_markdown
from cnnpipe.report.noise import at_revision, read_noise_record, settings_fingerprint
from cnnpipe.report.plots import changed_plots, render_plots
from cnnpipe.report.revisions import ReportError
from cnnpipe.report.significance import significance, unchanged_variants
from cnnpipe.report.verdict import judge_changes

MAX_PLOTS = 12  # a report with more images than this is scrolled past, not read
ASSETS_MARKER = ".cnnpipe-report"  # marks an assets folder this module may replace


def _read_optional(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    return text.strip() or None


def assets_dir_for(out: Path) -> Path:
    """``report.md`` -> ``report_assets`` beside it."""
    return out.with_name(f"{out.stem}_assets")


def replace_assets(new: Path | None, target: Path) -> None:
    """Swap ``new`` in for ``target`` (None: just remove an old one we made)."""
    if target.exists():
        if not (target / ASSETS_MARKER).exists():
            raise ReportError(
                f"{target} exists and was not written by `cnnpipe report`; move it or choose "
                "another --out"
            )
        trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        os.replace(target, trash / "x")
        shutil.rmtree(trash, ignore_errors=True)
    if new is not None:
        os.replace(new, target)


def write_report(
    repo: Path, out: Path, base: str | None = None, max_plots: int = MAX_PLOTS,
    dvc: str | None = None,
) -> dict:
    """Collect, render and write ``out`` and its assets folder atomically; a summary dict."""
    repo, out = Path(repo).resolve(), Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    assets = assets_dir_for(out)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{assets.name}.new."))
    try:
        with tempfile.TemporaryDirectory() as dvc_images:
            collected = collect(repo, base, Path(dvc_images), dvc=dvc)
            changes = changed_plots(collected.plots)
            shown = changes[:max_plots]
            rendered = render_plots(shown, staging, collected.base)
        variants, tests = variant_metrics(collected.metrics), significance(collected.predictions)
        verdicts = _judged_changes(repo, collected.base, variants, tests)
        markdown = render_markdown(
            collected,
            variants,
            changed_params(collected.params),
            rendered,
            omitted=len(changes) - len(shown),
            assets_name=assets.name,
            leaderboard=_read_optional(repo / "reports/leaderboard.md"),
            transfer=_read_optional(repo / "reports/transfer.md"),
            tests=tests,
            changes=verdicts,
        )
        has_files = any(item["files"] for item in rendered)
        if has_files:
            (staging / ASSETS_MARKER).write_text("made by cnnpipe report; replaced on each run\n")
            os.chmod(staging, 0o755)
        replace_assets(staging if has_files else None, assets)
        write_text(out, markdown)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "base": collected.base, "commit": collected.commit, "out": str(out),
        "assets": str(assets) if has_files else None,
        "changed_params": len(changed_params(collected.params)),
        "changed_plots": len(changes), "plots_shown": len(shown),
        "unchanged": unchanged_variants(variants, tests),
        "verdicts": {variant: change["verdict"] for variant, change in verdicts.items()},
        "accuracy_changes": verdicts,
    }


def _judged_changes(repo: Path, base: str, variants: dict, tests: dict) -> dict[str, dict]:
    """Each changed variant's verdict against the training-noise record the base commits,
    used only where it was measured on the base's own settings."""
    base_files = at_revision(repo, base)
    fingerprints = {variant: settings_fingerprint(base_files, variant) for variant in variants}
    return judge_changes(variants, tests, read_noise_record(base_files), fingerprints)


REPORT_DESCRIPTION = """\
Compare the workspace with a git revision and write a Markdown report: changed params; for
each variant whose results changed, the accuracy delta and a verdict: "real change" only when
the new accuracy beats the training noise that bench/training_noise.py recorded at the base
(judged as one more retrain against the accuracies of retrains with other seeds, their spread
no smaller than the test set's sampling error; Student's t, Holm-corrected across variants,
p < 0.05), with McNemar's exact test beside it (do these two models differ on these test
images?) and a 95% interval; the headline
metrics (accuracy, macro_f1, loss, ece, total_params, train_seconds) with old, new and
delta; the workspace's leaderboard and transfer table, and PNG images of the
plots whose data changed (at most --max-plots), saved in a folder beside the report
(report.md -> report_assets/). Run it in the repository after `dvc repro`."""


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="Markdown report of params, metrics and plots changed since a git revision",
        description=REPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(handler=run_report)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", metavar="REV",
                        help="git revision to compare with (default: main if it exists, else HEAD)")
    parser.add_argument("--out", default="report.md", metavar="FILE",
                        help="the Markdown file to write (default: %(default)s)")
    parser.add_argument("--repo", default=".", metavar="DIR",
                        help="the DVC repository (default: the current directory)")
    parser.add_argument("--max-plots", type=int, default=MAX_PLOTS, metavar="N",
                        help="render at most N changed plots (default: %(default)s)")


def run_report(args: argparse.Namespace) -> int:
    summary = write_report(Path(args.repo), Path(args.out), args.base, max(0, args.max_plots))
    print(f"wrote {summary['out']} (workspace vs {summary['base']} at {summary['commit']}: "
          f"{summary['changed_params']} params changed, {summary['changed_plots']} plots "
          f"changed, {summary['plots_shown']} shown)")
    by_verdict: dict[str, list[str]] = {}
    for variant, verdict in summary["verdicts"].items():
        by_verdict.setdefault(verdict, []).append(variant)
    for verdict, names in sorted(by_verdict.items()):
        print(f"{verdict}: {', '.join(names)}")
    return 0
