"""Write an HTML template for `dvc plots show` that embeds Vega, Vega-Lite and vega-embed.

DVC's default page loads them from a CDN, which renders blank on a machine without internet.
A classic <script> (not type="module") so DVC's inline plot scripts find vegaEmbed defined.
"""

import sys
from pathlib import Path

import vl_convert

TEMPLATE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>cnnpipe plots</title>
<script>
{bundle}
</script>
<style>
body {{ font-family: sans-serif; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def main(out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")
    path.write_text(TEMPLATE.format(bundle=bundle))


if __name__ == "__main__":
    main(sys.argv[1])
