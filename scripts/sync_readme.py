"""Copy the committed leaderboard, transfer and export-parity tables (written by `dvc repro`)
into README.md.

Run by `make repro`; tests/test_leaderboard.py fails if the README and the reports disagree.
"""

import re
from pathlib import Path

import yaml

BLOCKS = {"leaderboard": Path("reports/leaderboard.md"), "transfer": Path("reports/transfer.md")}


def export_tables() -> str:
    """The first exported variant's parity tables, without the report's own heading."""
    variants = (yaml.safe_load(Path("params.yaml").read_text()).get("export") or {}).get("variants")
    if not variants:
        return "No variant is exported (`export.variants` is empty).\n"
    report = Path(f"reports/export/{variants[0]}.md").read_text()
    return report.split("\n", 2)[2].lstrip("\n") if report.startswith("# ") else report


def block_texts() -> dict[str, str]:
    texts = {name: source.read_text() for name, source in BLOCKS.items()}
    texts["export"] = export_tables()
    return texts


def main() -> None:
    readme = Path("README.md")
    text = readme.read_text()
    for name, content in block_texts().items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md lacks the <!-- {name}:start --> ... end block")
        text = pattern.sub(lambda m, c=content: m.group(1) + c + m.group(2), text)
    readme.write_text(text)


if __name__ == "__main__":
    main()
