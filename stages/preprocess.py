"""Stage preprocess: resize, convert channels, normalize (statistics from train only).

params: preprocess
"""

from cnnpipe import layout
from cnnpipe.config import load_params
from cnnpipe.data.prepare import Split
from cnnpipe.io import load_split, save_split, write_json
from cnnpipe.preprocessing import apply_preprocessing, fit_preprocessing
from cnnpipe.runner import run


def main() -> None:
    cfg = load_params(layout.PARAMS).preprocess
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
