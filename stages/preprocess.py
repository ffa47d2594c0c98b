"""Stage preprocess: decide the model input (size, channels, normalization) and fit the
normalization statistics on the training split, streaming its shards.

It converts no images: the model applies resize, channel conversion and normalization as
Keras layers built from data/processed/preprocessing.json. Runs without TensorFlow.

settings: resolved/preprocess.json, written by the params stage
"""

from cnnpipe.core import layout
from cnnpipe.core.io import write_json
from cnnpipe.core.runner import run
from cnnpipe.core.settings import read_settings
from cnnpipe.core.shards import ShardSet
from cnnpipe.preprocess.preprocessing import fit_preprocessing


def main() -> None:
    cfg = read_settings(layout.resolved("preprocess")).preprocess
    train = ShardSet.open(layout.PREPARED / "train")
    prep = fit_preprocessing(train, cfg.image_size, cfg.channels, cfg.normalization)
    # Whole-array outputs of earlier versions would otherwise linger beside the settings.
    for stale in layout.PROCESSED.glob("*.npz"):
        stale.unlink()
    write_json(layout.PREPROCESSING, prep.to_dict())
    if prep.channel_conversion:
        print(
            f"converting {prep.prepared_channels}-channel images to {prep.channels} channels "
            f"({prep.channel_conversion}, preprocess.channels={cfg.channels})"
        )
    shape = "x".join(map(str, prep.input_shape))
    print(f"model input {shape} with {prep.normalization} normalization")


if __name__ == "__main__":
    run(main, tensorflow=False)
