"""Stage preprocess: resize, convert channels, normalize (statistics from train only).

settings: resolved/preprocess.json, written by the params stage
"""

from cnnpipe.core import layout
from cnnpipe.core.io import Split, load_split, save_split, write_json
from cnnpipe.preprocess.preprocessing import apply_preprocessing, fit_preprocessing
from cnnpipe.core.runner import run
from cnnpipe.core.settings import read_settings


def main() -> None:
    cfg = read_settings(layout.resolved("preprocess")).preprocess
    splits = {name: load_split(layout.PREPARED / f"{name}.npz") for name in layout.SPLITS}
    prep = fit_preprocessing(
        splits["train"].images, cfg.image_size, cfg.channels, cfg.normalization
    )
    for name, split in splits.items():
        save_split(
            layout.PROCESSED / f"{name}.npz", Split(apply_preprocessing(split.images, prep), split.labels)
        )
    write_json(layout.PREPROCESSING, prep.to_dict())
    print(f"preprocessed to {prep.input_shape} with {prep.normalization} normalization")


if __name__ == "__main__":
    run(main)
