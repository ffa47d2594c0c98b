"""Stage params: validate the whole params.yaml and write each stage's resolved settings.

It runs first and never imports TensorFlow, so a bad key or value stops `dvc repro` in a
second or two with one line, before any stage has deleted an output. Its output folder is
`persist`ed: a refused file leaves the previous resolved settings (and so everything
downstream) as they were. It also removes the outputs of variants no longer in params.yaml,
so `dvc metrics show`, the plots and the leaderboard stop listing them.

params: the whole of params.yaml
"""

import shutil

from cnnpipe.core import layout
from cnnpipe.core.io import write_json
from cnnpipe.core.runner import run
from cnnpipe.params import load_params, resolved_configs


def remove_variant_outputs(keep: set[str]) -> list[str]:
    removed = sorted(layout.variants_on_disk() - keep)
    for name in removed:
        for path in layout.variant_outputs(name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return removed


def main() -> None:
    params = load_params(layout.PARAMS)
    configs = resolved_configs(params)
    for path, config in configs.items():
        write_json(path, config)
    for stale in layout.resolved_train("*").parent.glob("*.json"):
        if str(stale) not in configs:
            stale.unlink()
    removed = remove_variant_outputs(set(params.models))
    note = f"; removed the outputs of {', '.join(removed)}" if removed else ""
    print(f"params valid: {len(params.models)} variants{note}")


if __name__ == "__main__":
    run(main, tensorflow=False)
