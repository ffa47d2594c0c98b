"""The params stage's training-memory estimate against the peak RSS of real training steps.

Each case runs in a fresh process: build the variant as params.yaml sets it (RGB input at the
given size, no resize; MobileNet set to work at that size too), two training steps on one
random batch, then the process's peak resident memory (getrusage). Numbers go to
bench/RESULTS.md. A few minutes on 2 cores; an argument runs only the variants naming it.

    PYTHONPATH=src python bench/memory_estimate.py [mobilenet]
"""

import json
import os
import resource
import subprocess
import sys

CASES = [  # (variant in params.yaml, image side, batch)
    ("simple_cnn", 32, 8),  # nearly all runtime: checks RUNTIME_BYTES
    ("simple_cnn", 96, 64), ("simple_cnn", 192, 64),
    ("regularized_cnn", 96, 64), ("regularized_cnn", 192, 64),
    ("mobilenet_scratch", 96, 64), ("mobilenet_scratch", 192, 64),
]
CLASSES = 10


def variant(name, side):
    """What train@<name> would read, with MobileNet's own size made the case's side."""
    from cnnpipe.params import load_params
    from cnnpipe.params.resolve import train_config

    config = train_config(load_params("params.yaml"), name)
    if "image_size" in config["hyperparameters"]:
        config["hyperparameters"]["image_size"] = side
    return config


def measure(name, side, batch):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from cnnpipe.models import classification_head_loss
    from cnnpipe.train.build import build_network

    config = {**variant(name, side), "hyperparameters": {
        **variant(name, side)["hyperparameters"], "weights": "none"}}
    model = build_network(config, (side, side, 3), CLASSES)
    model.compile(optimizer="adam", loss=classification_head_loss(CLASSES))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    y = rng.integers(0, CLASSES, batch)
    model.fit(x, y, batch_size=batch, epochs=2, verbose=0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB on Linux


def main():
    from cnnpipe.models import get_architecture
    from cnnpipe.params.memory import training_memory

    print("| variant | image | batch | estimate (GB) | peak RSS (GB) | estimate / measured |")
    print("|---|---|---:|---:|---:|---:|")
    for name, side, batch in CASES:
        if sys.argv[1:] and sys.argv[1] not in name:
            continue
        run = subprocess.run([sys.executable, __file__, json.dumps([name, side, batch])],
                             capture_output=True, text=True, check=True)
        measured = int(run.stdout.split()[-1]) / 1e9
        config = variant(name, side)
        settings = get_architecture(config["architecture"]).settings(config["hyperparameters"])
        shape = (side, side, 3)
        estimate = training_memory(settings, shape, shape, batch, CLASSES).total / 1e9
        print(f"| {name} | {side}x{side}x3 | {batch} | {estimate:.2f} | {measured:.2f} | "
              f"{estimate / measured:.2f} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] and sys.argv[1].startswith("["):
        measure(*json.loads(sys.argv[1]))
    else:
        main()
