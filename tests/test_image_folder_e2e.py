"""End-to-end on a user's image folder: variants of params.yaml train on it unchanged, and
the results travel through a DVC remote to a second clone.

Two variants keep the suite within its time: every architecture already runs end to end in
test_pipeline_e2e.py (simple, augmented, both MobileNets), test_small_data.py (regularized,
bn_gap) or here (inception_attention, whose attention blocks are the odd shapes).
"""

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from pipeline_repo import ROOT, dvc, make_tiny_repo, run

pytestmark = pytest.mark.slow

CLASSES = ("circle", "square", "stripes")
PER_CLASS = 70
VARIANTS = ("simple_cnn", "inception_attention")


def draw(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    colour = rng.integers(80, 256, 3)
    canvas = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    cx, cy, r = w / 2 + rng.normal(0, 3), h / 2 + rng.normal(0, 3), min(w, h) / 3
    if kind == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
    elif kind == "square":
        mask = (abs(xx - cx) < r) & (abs(yy - cy) < r)
    else:
        mask = (xx // 4) % 2 == 0
    canvas[mask] = colour
    return Image.fromarray(canvas)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    models = {name: params["models"][name] for name in VARIANTS}
    for spec in models.values():  # one epoch of each phase: this checks wiring, not accuracy
        spec["epochs"] = 1
        if "fine_tune_epochs" in spec:
            spec["fine_tune_epochs"] = 1
        if spec.get("weights") == "pretrain":
            spec["pretrain_epochs"] = 1
    path = make_tiny_repo(tmp_path_factory.mktemp("folder"), models)
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        folder = path / "data/images" / kind
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
            draw(kind, size, rng).save(folder / f"{i:03d}.jpg", quality=90)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["data"].update({"source": "image_folder", "input": "data/images", "train_limit": 0,
                           "test_limit": 0})
    # No `channels` anywhere: RGB photos must stay RGB by themselves.
    params["data"]["images"].update({"image_size": [32, 32]})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(path, "add", "data/images")
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", "image folder")
    dvc(path, "repro")
    return path


def test_the_variants_train_on_the_folder(repo):
    card = json.loads((repo / "data/prepared/data_card.json").read_text())
    assert card["class_names"] == list(CLASSES)
    assert sum(card["sizes"].values()) == 3 * PER_CLASS
    for name in VARIANTS:
        metrics = json.loads((repo / f"reports/evaluation/{name}.json").read_text())
        assert metrics["num_test_images"] == card["sizes"]["test"], name
        assert set(metrics["per_class"]) == set(CLASSES), name
    quality = json.loads((repo / "reports/data_quality.json").read_text())
    assert quality["files"]["decoded"] == 3 * PER_CLASS
    assert quality["files"]["skipped"] == 0


def test_rgb_photos_train_as_rgb_without_a_channels_param(repo):
    card = json.loads((repo / "data/prepared/data_card.json").read_text())
    assert card["image_shape"] == [32, 32, 3]
    model_card = json.loads((repo / "models/simple_cnn/model_card.json").read_text())
    assert model_card["raw_image_shape"] == [32, 32, 3]
    assert model_card["preprocessing"]["channels"] == 3


def test_the_saved_model_classifies_raw_pixels_in_a_process_without_cnnpipe(repo, tmp_path):
    """model.keras owns its preprocessing: keras alone, fed the stored uint8 pixels, gives
    what `cnnpipe predict` gives."""
    rng = np.random.default_rng(7)
    photo = tmp_path / "photo.png"  # already at the stored size, so no resize is involved
    draw("circle", (32, 32), rng).save(photo)
    predicted = json.loads(run(repo, "cnnpipe", "predict", str(photo), "--model", "simple_cnn",
                               "--json").stdout)[0]["probabilities"]
    script = (
        "import json, sys; import keras, numpy as np; from PIL import Image; "
        "m = keras.saving.load_model('models/simple_cnn/model.keras', compile=False); "
        f"x = np.asarray(Image.open({str(photo)!r}).convert('RGB'))[None]; "
        "assert x.dtype == np.uint8 and not any(n.startswith('cnnpipe') for n in sys.modules); "
        "print(json.dumps(m.predict(x, verbose=0)[0].tolist()))"
    )
    alone = json.loads(run(repo, "python", "-c", script).stdout)
    np.testing.assert_allclose(alone, [predicted[name] for name in CLASSES], atol=1e-5)


def test_remote_round_trip_gives_the_same_model(repo, tmp_path):
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "-d", "shared", str(remote))
    dvc(repo, "push")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "results and remote")

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    dvc(clone, "pull")
    assert "up to date" in dvc(clone, "status").stdout
    assert (clone / "data/images/circle/000.jpg").is_file()

    script = (
        "import json; from cnnpipe.inference import TrainedVariant; "
        "from cnnpipe.core.shards import ShardSet; "
        "m = TrainedVariant.load('models/simple_cnn'); "
        "x = ShardSet('data/prepared/test').read(range(len(ShardSet('data/prepared/test')))); "
        "print(json.dumps(m.predict(x).tolist()))"
    )
    original = json.loads(run(repo, "python", "-c", script).stdout)
    pulled = json.loads(run(clone, "python", "-c", script).stdout)
    np.testing.assert_allclose(pulled, original, atol=1e-6)
