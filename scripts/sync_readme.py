"""Copy the committed leaderboard and transfer tables (written by `dvc repro`) into README.md.

Run by `make repro`; tests/test_leaderboard.py fails if the README and the reports disagree.
"""

import re
from pathlib import Path

BLOCKS = {"leaderboard": Path("reports/leaderboard.md"), "transfer": Path("reports/transfer.md")}


def main() -> None:
    readme = Path("README.md")
    text = readme.read_text()
    for name, source in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md lacks the <!-- {name}:start --> ... end block")
        text = pattern.sub(lambda m, s=source: m.group(1) + s.read_text() + m.group(2), text)
    readme.write_text(text)


if __name__ == "__main__":
    main()
