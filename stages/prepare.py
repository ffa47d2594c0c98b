"""Stage prepare: obtain Fashion-MNIST, verify checksums, split train/val (test stays test).

params: seed, data
"""

from pathlib import Path

from cnnpipe import layout
from cnnpipe.config import load_params
from cnnpipe.data import fashion_mnist
from cnnpipe.data.prepare import Split, data_card, prepare_splits
from cnnpipe.io import save_split, write_json
from cnnpipe.runner import run


def main() -> None:
    params = load_params(layout.PARAMS)
    data_cfg = params.data
    source_cfg = data_cfg.fashion_mnist
    raw = fashion_mnist.load_fashion_mnist(
        Path(source_cfg.local_dir), source_cfg.url, Path(source_cfg.download_dir)
    )
    data = prepare_splits(
        Split(raw.train_images, raw.train_labels),
        Split(raw.test_images, raw.test_labels),
        fashion_mnist.CLASS_NAMES,
        val_fraction=data_cfg.val_fraction,
        seed=params.seed,
        train_limit=data_cfg.train_limit,
        test_limit=data_cfg.test_limit,
    )
    for name, split in data.splits().items():
        save_split(layout.PREPARED / f"{name}.npz", split)
    card = data_card(data, raw.source, raw.checksums, fashion_mnist.LICENSE)
    write_json(layout.DATA_CARD, card)
    print(f"prepared {card['sizes']} from {raw.source}")


if __name__ == "__main__":
    run(main)
