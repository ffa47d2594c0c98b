"""Stage prepare: read the source named by data.source, check its quality, split it.

Sources: fashion_mnist, mnist, cifar10, cifar100, image_folder, archive. The test split is
the source's own when it has one, else drawn (data.test_fraction); val is drawn from train.
The quality report is written even when a threshold stops the stage, since it is what
explains the failure. Splits are written as uint8 record shards (cnnpipe.core.shards);
folder and archive images are decoded into a temporary file beside data/prepared, never
all into memory.

settings: resolved/prepare.json (seed, data), written by the params stage
"""

from cnnpipe.core import layout
from cnnpipe.data.quality import DataQualityError, render_markdown
from cnnpipe.data.sources import build_dataset
from cnnpipe.data.storage import write_prepared
from cnnpipe.core.io import write_csv, write_json, write_text
from cnnpipe.core.runner import run
from cnnpipe.core.settings import read_settings


def write_quality_reports(report: dict) -> None:
    write_json(layout.DATA_QUALITY_JSON, report)
    write_text(layout.DATA_QUALITY_MD, render_markdown(report))
    if report.get("class_balance"):
        write_csv(layout.CLASS_BALANCE, report["class_balance"])
    else:
        # No splits were drawn; an old table would describe some other data.
        layout.CLASS_BALANCE.unlink(missing_ok=True)


def main() -> None:
    params = read_settings(layout.resolved("prepare"))
    # The spool holds every decoded image for a while: on the data disk, not in /tmp,
    # which may be a RAM-backed tmpfs.
    try:
        built = build_dataset(params.data, params.seed, spool_dir=layout.PREPARED.parent)
    except DataQualityError as exc:
        write_quality_reports(exc.report)
        raise
    write_quality_reports(built.report)
    card = write_prepared(layout.PREPARED, built.prepared, built.card)
    storage = card["storage"]
    print(
        f"prepared {card['sizes']} of {'x'.join(map(str, card['image_shape']))} from "
        f"{card['source']} ({storage['bytes'] / 2**20:.1f} MiB of shards)"
    )


if __name__ == "__main__":
    run(main, tensorflow=False)
