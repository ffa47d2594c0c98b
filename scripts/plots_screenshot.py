"""Look at the `dvc plots show` page as a person does: render it offline and take a
headless-Chromium screenshot.

    python scripts/plots_screenshot.py [OUT.png]

Needs the offline page template (`make setup`) and Debian's `chromium`
(`apt-get install -y chromium`). Prints the page's size in bytes, the height of the drawn
content in pixels and the number of charts, the numbers the plots issue was about (it was
16,000 px tall and 12 MB); the screenshot is for the eye, nothing here is asserted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc/plots/offline.html"
WIDTH, HEIGHT = 1400, 8000  # tall enough to see where the content ends


def main(out: Path) -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    if not TEMPLATE.is_file():
        print(f"{TEMPLATE} missing: run `make setup`", file=sys.stderr)
        return 2
    dvc = Path(sys.executable).parent / "dvc"
    with tempfile.TemporaryDirectory() as tmp:
        page_dir = Path(tmp) / "page"
        subprocess.run([str(dvc), "plots", "show", "--html-template", str(TEMPLATE),
                        "-o", str(page_dir)], cwd=ROOT, check=True, capture_output=True)
        page = page_dir / "index.html"
        html = page.read_text()
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--hide-scrollbars",
                        f"--screenshot={out}", f"--window-size={WIDTH},{HEIGHT}",
                        "--virtual-time-budget=15000", page.as_uri()],
                       check=True, capture_output=True, timeout=180)
    pixels = np.asarray(Image.open(out).convert("L"))
    drawn = np.flatnonzero((pixels < 250).any(axis=1))
    height = int(drawn.max()) + 1 if drawn.size else 0
    charts = len(re.findall(r"vegaEmbed\(", html))
    images = len(re.findall(r"<img ", html))
    print(f"page: {len(html.encode()):,} bytes, {charts} Vega charts, {images} images; "
          f"content {height:,} px tall at {WIDTH} px wide; screenshot {out}")
    if height >= HEIGHT:
        print(f"the content reaches the bottom of the {HEIGHT} px window: taller still")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "plots_page.png").resolve()))
