"""The data-quality report as the Markdown page a person reads (reports/data_quality.md)."""

from __future__ import annotations

SPLIT_ORDER = ("train", "val", "test")


def render_markdown(report: dict) -> str:
    """The report as a Markdown page for people (the JSON is for tools)."""
    files = report["files"]
    lines = _summary_lines(report)
    if report.get("problems"):
        lines += ["## Problems", ""] + [f"- {p}" for p in report["problems"]] + [""]
    if "counts" in report:
        lines += _class_count_lines(report)
    lines += _path_reasons("Skipped files", "file", report["skipped"], files["skipped"])
    if files["ignored"]:
        lines += _files_not_used_lines(files)
    if report["original_images"].get("count"):
        lines += _original_image_lines(report["original_images"])
    if report["duplicates"]["details"]:
        lines += _duplicate_lines(report["duplicates"])
    if report["label_conflicts"]["groups"]:
        lines += _label_conflict_lines(report["label_conflicts"])
    not_read = report["not_read"]
    lines += _path_reasons(
        "Links and special files not read", "entry", not_read["details"], not_read["entries"]
    )
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def _summary_lines(report: dict) -> list[str]:
    files = report["files"]
    dup = report["duplicates"]
    conflicts = report["label_conflicts"]
    return [
        "# Data quality report",
        "",
        f"Source: `{report['source']}`",
        "",
        "| | |",
        "|---|---|",
        f"| classes | {len(report['class_names'])} |",
        f"| images found | {files['image_files']} |",
        f"| decoded | {files['decoded']} |",
        f"| skipped (unreadable) | {files['skipped']} "
        f"({100 * files['unreadable_fraction']:.1f}%) |",
        f"| exact duplicates | {dup['copies']} copies in {dup['groups']} groups, "
        f"{dup['removed']} removed |",
        f"| label conflicts (one image under two or more classes) | "
        f"{dup['label_conflicts']} group(s), {conflicts['images']} images, "
        f"{conflicts['removed']} removed |",
        f"| links and special files not read | {report['not_read']['entries']} |",
        "",
    ]


def _class_count_lines(report: dict) -> list[str]:
    splits = [s for s in SPLIT_ORDER if s in report["counts"]]
    lines = [
        "## Images per class and split",
        "",
        "| class | " + " | ".join(splits) + " | total |",
        "|---|" + "---:|" * (len(splits) + 1),
    ]
    for name in report["class_names"]:
        cells = [str(report["counts"][s].get(name, 0)) for s in splits]
        total = report["totals_per_class"][name]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + f" | {total} |")
    lines.append("")
    return lines


def _files_not_used_lines(files: dict) -> list[str]:
    lines = ["## Files not used", "", "| why | files |", "|---|---:|"]
    lines += [f"| {why.replace('_', ' ')} | {n} |" for why, n in files["ignored"].items()]
    if files["ignored_extensions"]:
        exts = ", ".join(f"{e} ({n})" for e, n in files["ignored_extensions"].items())
        lines.append(f"| extensions not read | {_cell(exts)} |")
    lines.append("")
    return lines


def _original_image_lines(originals: dict) -> list[str]:
    lines = ["## Original images", ""]
    if "width" in originals:
        lines.append(
            f"Width {originals['width']['min']}-{originals['width']['max']} px, "
            f"height {originals['height']['min']}-{originals['height']['max']} px, "
            f"{originals['distinct_sizes']} distinct sizes."
        )
        lines.append("")
    for title, key in (("size (WxH)", "sizes"), ("mode", "modes"), ("format", "formats")):
        lines += [f"| {title} | images |", "|---|---:|"]
        lines += [f"| {_cell(str(k))} | {n} |" for k, n in originals[key].items()]
        lines.append("")
    return lines


def _policy_table(title: str, policy: str, columns: tuple[str, ...]) -> list[str]:
    """A section's heading, its policy line and the head of its table."""
    return [
        f"## {title}", "", f"Policy: {policy}.", "",
        "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
    ]


def _duplicate_lines(dup: dict) -> list[str]:
    lines = _policy_table("Exact duplicates", dup["policy"], ("kept", "copies", "classes"))
    for group in dup["details"]:
        kept = f"{group['kept']['split']}: {group['kept']['path']}"
        copies = "<br>".join(f"{c['split']}: {c['path']}" for c in group["copies"])
        classes = ", ".join(group["classes"])
        lines.append(f"| {_cell(kept)} | {_cell(copies)} | {_cell(classes)} |")
    if dup["details_not_listed"]:
        lines.append(f"| ... | {dup['details_not_listed']} more groups | |")
    lines.append("")
    return lines


def _label_conflict_lines(conflicts: dict) -> list[str]:
    lines = _policy_table("Label conflicts", conflicts["policy"], ("classes", "files"))
    for group in conflicts["details"]:
        listed = "<br>".join(
            f"{f['split']}: {f['path']}"
            + (f" (link to {f['links_to']})" if "links_to" in f else "")
            for f in group["files"]
        )
        lines.append(f"| {_cell(', '.join(group['classes']))} | {_cell(listed)} |")
    if conflicts["details_not_listed"]:
        lines.append(f"| ... | {conflicts['details_not_listed']} more groups |")
    lines.append("")
    return lines


def _path_reasons(title: str, what: str, listed: list[dict], total: int) -> list[str]:
    """A section listing {path, reason} entries; ``total`` counts those the report left out."""
    if not total:
        return []
    lines = [f"## {title}", "", f"| {what} | reason |", "|---|---|"]
    lines += [f"| {_cell(e['path'])} | {_cell(e['reason'])} |" for e in listed]
    if total > len(listed):
        lines.append(f"| ... | {total - len(listed)} more |")
    return lines + [""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
