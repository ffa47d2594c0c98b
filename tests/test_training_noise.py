"""The training-noise verdict of `cnnpipe report`: the statistics, the record and its
fingerprint, each case's rendering (no training), the bench's seeded copy, then (slow) a tiny
repo on real digits: a rerun with a seed outside the record is no real change, a one-epoch
variant is."""

import importlib.util
import json
import math
import shutil

import numpy as np
import pytest
import yaml
from pipeline_repo import ROOT, dvc, make_tiny_repo, run

from cnnpipe import report
from cnnpipe.report import noise

NO_RECORD_CELL = "no noise record at `main`: `python bench/training_noise.py` measures it"


def load_bench():
    path = ROOT / "bench/training_noise.py"
    spec = importlib.util.spec_from_file_location("training_noise", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- statistics ---------------------------------------------------------------------------


def test_noise_p_value_is_students_t_of_a_prediction_from_the_runs():
    from scipy.stats import t as student_t

    new, mean, spread = 0.92, 0.91, 0.005
    for runs in (3, 4, 9):
        t = (new - mean) / (spread * math.sqrt(1 + 1 / runs))
        assert noise.noise_p_value(new, mean, spread, runs) == pytest.approx(
            2 * student_t.sf(t, runs - 1), rel=1e-12)
    # With 2 degrees of freedom the two-sided p has a closed form: 1 - t / sqrt(t^2 + 2).
    t = 0.01 / (spread * math.sqrt(4 / 3))
    assert noise.noise_p_value(new, mean, spread, 3) == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert noise.noise_p_value(0.90, mean, spread, 3) == noise.noise_p_value(new, mean, spread, 3)
    assert noise.noise_p_value(mean, mean, spread, 3) == pytest.approx(1.0)
    # More runs: the spread and the mean are known better, the same distance means more.
    assert noise.noise_p_value(new, mean, spread, 10) < noise.noise_p_value(new, mean, spread, 3)
    assert noise.noise_p_value(0.9, 0.9, 0.0, 3) == 1.0
    assert noise.noise_p_value(0.91, 0.9, 0.0, 3) == 0.0


def test_the_spread_never_claims_less_than_the_test_sets_sampling_error():
    close = [0.943, 0.946, 0.949]  # s = 0.3 pp
    floor = math.sqrt(0.946 * 0.054 / 359)  # 1.19 pp on 359 test images
    assert noise.sampling_floor(0.946, 359) == pytest.approx(floor)
    assert noise.effective_spread(close, 359) == pytest.approx(floor)
    assert noise.effective_spread(close, None) == pytest.approx(0.003)  # an older record
    assert noise.effective_spread(close, 10_000) == pytest.approx(0.003)  # s above 0.23 pp
    assert noise.sampling_floor(0.93, 10_000) == pytest.approx(0.00255, abs=1e-5)
    assert noise.effective_spread([0.9, 0.9, 0.9], 359) == pytest.approx(
        math.sqrt(0.09 / 359))
    assert noise.effective_spread([1.0, 1.0, 1.0], 359) == 0.0


def test_a_fresh_seed_far_from_three_close_runs_is_within_noise_with_the_floor():
    """The case that misfired: three digits runs 0.3 pp apart, a fourth seed 3 pp below."""
    from scipy.stats import t as student_t

    accuracies, new = [0.943, 0.946, 0.949], 0.9163
    floor = math.sqrt(0.946 * 0.054 / 359)
    with_size = {"variants": {"v": _entry(accuracies, test_images=359)}}
    judged = noise.judge_noise({"v": new}, with_size, {"v": "f"})["v"]
    t = (new - 0.946) / (floor * math.sqrt(1 + 1 / 3))
    assert judged["p_value"] == pytest.approx(2 * student_t.sf(abs(t), 2), rel=1e-9)
    assert judged["p_value"] == pytest.approx(0.1638, abs=1e-4) and not judged["real"]
    assert judged["spread"] == pytest.approx(floor) and judged["std"] == pytest.approx(0.003)
    older = {"variants": {"v": _entry(accuracies)}}  # no test-set size: s alone
    judged = noise.judge_noise({"v": new}, older, {"v": "f"})["v"]
    assert judged["p_value"] == pytest.approx(0.0133, abs=1e-4) and judged["real"]


def test_run_statistics_are_the_mean_and_the_sample_standard_deviation():
    mean, spread = noise.run_statistics([0.90, 0.91, 0.92])
    assert mean == pytest.approx(0.91) and spread == pytest.approx(0.01)  # n - 1, not n
    assert noise.run_statistics([0.9]) == (pytest.approx(0.9), None)


def test_holm_adjusts_step_down_and_keeps_the_order():
    adjusted = report.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert report.holm({}) == {}


# --- the fingerprint and the record ---------------------------------------------------------


def _settings(seed=42, epochs=6, source="fashion_mnist", data_input="resolved/prepare.json",
              input_md5="abc.dir"):
    lock = {"stages": {"prepare": {"deps": [{"path": data_input, "md5": input_md5}]}}}
    return {
        "resolved/train/v.json": {"seed": seed, "variant": "v", "train": {"epochs": epochs}},
        "resolved/prepare.json": {"seed": seed, "data": {"source": source, "input": data_input}},
        "resolved/preprocess.json": {"preprocess": {"normalization": "unit"}},
        "dvc.lock": lock,
    }


def _reader(files: dict):
    def read(path):
        if path not in files:
            return None
        value = files[path]
        return (yaml.safe_dump(value) if path == "dvc.lock" else json.dumps(value)).encode()
    return read


def test_fingerprint_leaves_out_the_seed_and_nothing_else():
    base = noise.settings_fingerprint(_reader(_settings()), "v")
    assert base and noise.settings_fingerprint(_reader(_settings(seed=7)), "v") == base
    assert noise.settings_fingerprint(_reader(_settings(epochs=1)), "v") != base
    assert noise.settings_fingerprint(_reader(_settings(source="mnist")), "v") != base
    assert noise.settings_fingerprint(_reader(_settings()), "other") is None


def test_fingerprint_covers_the_content_of_an_image_folder():
    folder = _settings(source="image_folder", data_input="data/images")
    other_images = _settings(source="image_folder", data_input="data/images", input_md5="f.dir")
    assert (noise.settings_fingerprint(_reader(folder), "v")
            != noise.settings_fingerprint(_reader(other_images), "v"))
    # A settings file as the input holds the seed: its hash must not enter.
    seeded = _settings(input_md5="other")
    assert noise.settings_fingerprint(_reader(seeded), "v") == noise.settings_fingerprint(
        _reader(_settings()), "v")


def test_the_fingerprint_of_this_repositorys_settings():
    files = noise.working_tree(ROOT)
    assert len(noise.settings_fingerprint(files, "simple_cnn")) == 64


def _entry(accuracies, fingerprint="f", test_images=None):
    runs = [{"seed": 42 + i, "accuracy": a, "cpu": "cpu"} for i, a in enumerate(accuracies)]
    return noise.noise_entry(fingerprint, runs, "rev", "2025-01-01T00:00:00+00:00", test_images)


def test_record_round_trip_keeps_variants_not_measured_again(tmp_path):
    noise.write_noise_record(tmp_path, {"a": _entry([0.9, 0.91, 0.92]), "b": _entry([0.8] * 3)})
    noise.write_noise_record(tmp_path, {"a": _entry([0.5, 0.6, 0.7], test_images=359)})
    record = noise.read_noise_record(noise.working_tree(tmp_path))
    assert record["variants"]["a"]["accuracies"] == [0.5, 0.6, 0.7]
    assert record["variants"]["a"]["test_images"] == 359
    assert record["variants"]["b"]["seeds"] == [42, 43, 44]
    assert record["variants"]["a"]["std"] == pytest.approx(0.1)
    (tmp_path / report.NOISE_RECORD).write_text("not json")
    assert noise.read_noise_record(noise.working_tree(tmp_path)) is None
    assert noise.read_noise_record(noise.working_tree(tmp_path / "nowhere")) is None


def test_only_a_matching_record_of_three_runs_judges():
    record = {"variants": {"ok": _entry([0.90, 0.91, 0.92]), "short": _entry([0.9, 0.91]),
                           "moved": _entry([0.9, 0.91, 0.92], fingerprint="old"),
                           "flat": _entry([0.9, 0.9, 0.9])}}
    fingerprints = {"ok": "f", "short": "f", "moved": "new", "flat": "f", "absent": "f"}
    judged = noise.judge_noise({v: 0.96 for v in fingerprints}, record, fingerprints)
    assert {v: j["status"] for v, j in judged.items()} == {
        "ok": "judged", "short": "too_few_runs", "moved": "other_settings", "flat": "no_spread",
        "absent": "no_record"}
    assert judged["ok"]["p_value"] == pytest.approx(noise.noise_p_value(0.96, 0.91, 0.01, 3))
    assert judged["ok"]["p_holm"] == judged["ok"]["p_value"]  # the only one judged
    assert judged["ok"]["floor"] == 0.0  # no test-set size recorded
    assert noise.judge_noise({"ok": 0.96}, None, fingerprints)["ok"]["status"] == "no_record"
    broken = {"variants": {"ok": {**record["variants"]["ok"], "accuracies": ["0.9", None]}}}
    assert noise.judge_noise({"ok": 0.96}, broken, fingerprints)["ok"]["status"] == "no_record"
    for size in ("359", 0, True, 35.9):
        bad_size = {"variants": {"ok": {**record["variants"]["ok"], "test_images": size}}}
        assert noise.judge_noise({"ok": 0.96}, bad_size, fingerprints)["ok"]["status"] == (
            "no_record"), size


def test_runs_that_tie_are_judged_against_the_floor_when_the_test_size_is_known():
    record = {"variants": {"flat": _entry([0.9, 0.9, 0.9], test_images=1000),
                           "perfect": _entry([1.0, 1.0, 1.0], test_images=1000)}}
    judged = noise.judge_noise({"flat": 0.95, "perfect": 0.99}, record,
                               {"flat": "f", "perfect": "f"})
    assert judged["perfect"] == {"status": "no_spread"}  # at 1.0 the floor is 0 as well
    flat = judged["flat"]
    assert flat["status"] == "judged" and flat["std"] == 0.0
    assert flat["spread"] == pytest.approx(math.sqrt(0.09 / 1000)) == flat["floor"]
    assert flat["p_value"] == pytest.approx(noise.noise_p_value(0.95, 0.9, flat["spread"], 3))


def test_holm_runs_over_the_judged_variants_of_one_report():
    record = {"variants": {v: _entry([0.900, 0.905, 0.910]) for v in "abc"}}
    judged = noise.judge_noise({"a": 0.935, "b": 0.99, "c": 0.905}, record,
                               dict.fromkeys("abc", "f"))
    assert judged["b"]["p_holm"] == pytest.approx(3 * judged["b"]["p_value"])
    assert judged["a"]["p_value"] < 0.05 and not judged["a"]["real"]  # alone it would pass
    assert judged["b"]["real"] and not judged["c"]["real"]


# --- rendering each case --------------------------------------------------------------------


def _cells(text: str, variant: str) -> list[str]:
    row = next(line for line in text.splitlines() if line.startswith(f"| {variant} |"))
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _paired(old_right: int, new_right: int, n: int = 1000):
    labels = np.zeros(n, dtype=np.int64)
    old = np.where(np.arange(n) < old_right, 0, 1)
    new = np.where(np.arange(n) < new_right, 0, 1)
    return (labels, old), (labels, new)


def _render(predictions, accuracies, record, fingerprints):
    metrics = {f"metrics/{v}.json": {"accuracy": {"old": old, "new": new}}
               for v, (old, new) in accuracies.items()}
    collected = report.Collected(base="main", commit="abc1234", params={}, metrics=metrics,
                                 plots={})
    variants = report.variant_metrics(metrics)
    tests = report.significance(predictions)
    changes = report.judge_changes(variants, tests, record, fingerprints)
    text = report.render_markdown(collected, variants, [], [], omitted=0, assets_name="r",
                                  leaderboard=None, transfer=None, tests=tests, changes=changes)
    return text, changes


def test_each_verdict_renders_in_its_row_with_mcnemar_beside_it():
    record = {"variants": {v: _entry([0.900, 0.905, 0.910]) for v in ("up", "same", "moved")}}
    record["variants"]["short"] = _entry([0.90, 0.91])
    record["variants"]["flat"] = _entry([0.90, 0.90, 0.90])
    record["variants"]["moved"]["fingerprint"] = "old"
    fingerprints = dict.fromkeys(("up", "same", "moved", "short", "flat", "absent"), "f")
    accuracies = {"up": (0.90, 0.99), "same": (0.90, 0.915), "moved": (0.90, 0.99),
                  "short": (0.90, 0.99), "flat": (0.90, 0.99), "absent": (0.90, 0.99)}
    predictions = {v: _paired(round(old * 1000), round(new * 1000))
                   for v, (old, new) in accuracies.items()}
    text, changes = _render(predictions, accuracies, record, fingerprints)
    assert {v: c["verdict"] for v, c in changes.items()} == {
        "up": "real change", "same": "within training noise", "moved": "no noise record",
        "short": "no noise record", "flat": "no noise record", "absent": "no noise record"}
    up = _cells(text, "up")
    assert up[3] == "+9.00 pp" and up[4] == "0.50 pp (3 runs)" and up[7] == "**real change**"
    assert up[8] == "< 0.001" and up[10] == "90 / 0"  # McNemar in its own columns
    # 15 images now right and none now wrong: these two models differ on these images
    # (McNemar, even Holm-corrected), but a retrain moves accuracy about as much.
    assert changes["same"]["mcnemar"]["differs"]
    assert _cells(text, "same")[7] == "within training noise"
    for variant in ("moved", "short", "flat", "absent"):
        cells = _cells(text, variant)
        assert cells[7] == NO_RECORD_CELL and cells[4:7] == ["n/a"] * 3, variant
        assert cells[8] == "< 0.001", variant  # McNemar still shown
    section = text.split("## Is the change real?", 1)[1].split("\n## ", 1)[0]
    assert section.count("No usable training-noise record at `main`") == 1
    assert section.index("No usable training-noise record") < section.index("| variant |")
    assert "no entry in `reports/training_noise.json`: absent" in section
    assert "recorded for other settings than `main`'s: moved" in section
    assert "fewer than 3 runs recorded: short" in section
    assert "every recorded run scored the same (more seeds measure the spread): flat" in section
    assert "whether the new accuracy beats the noise of training" in section
    assert "t = (new - m) / (s * sqrt(1 + 1/n))" in section
    assert "whether these two trained models differ on these test images" in section


def test_no_note_when_every_variant_is_judged():
    record = {"variants": {"up": _entry([0.90, 0.91, 0.92])}}
    text, _ = _render({"up": _paired(900, 990)}, {"up": (0.90, 0.99)}, record, {"up": "f"})
    assert "No usable training-noise record" not in text
    assert "bench/training_noise.py" in text  # the explanation names where s comes from


def test_a_spread_raised_to_the_floor_says_so_in_its_cell():
    record = {"variants": {"up": _entry([0.943, 0.946, 0.949], test_images=359)}}
    text, changes = _render({"up": _paired(943, 916)}, {"up": (0.943, 0.916)}, record,
                            {"up": "f"})
    assert _cells(text, "up")[4] == "1.19 pp (3 runs, test-set floor)"
    assert changes["up"]["verdict"] == "within training noise"


def test_a_test_split_drawn_by_seed_still_gets_the_noise_verdict():
    """A folder without train/ and test/ draws its test split by seed: McNemar cannot pair
    two revisions' predictions, the accuracy delta against the noise still decides."""
    labels_old, labels_new = np.arange(200) % 10, (np.arange(200) + 1) % 10
    predictions = {"folder": ((labels_old, labels_old), (labels_new, labels_new))}
    record = {"variants": {"folder": _entry([0.80, 0.81, 0.82])}}
    text, changes = _render(predictions, {"folder": (0.80, 0.95)}, record, {"folder": "f"})
    assert changes["folder"]["mcnemar"]["status"] == "unpaired"
    assert changes["folder"]["verdict"] == "real change"
    cells = _cells(text, "folder")
    assert cells[3] == "+15.00 pp" and cells[7] == "**real change**"
    assert cells[8:] == ["n/a"] * 4
    assert "No McNemar test for folder: the test sets differ" in text


# --- the bench's seeded copy -------------------------------------------------------------


def test_the_bench_retrains_with_three_more_seeds_by_default():
    bench = load_bench()
    assert bench._parse([]).seeds == "43,44,45"
    runs = [{"test_images": 359}, {"test_images": 359}]
    assert bench._one_test_size("v", runs) == 359
    with pytest.raises(bench.NoiseError, match="test sets of different sizes"):
        bench._one_test_size("v", [*runs, {"test_images": 360}])


def test_with_seed_changes_the_seed_line_and_no_other_byte():
    bench = load_bench()
    text = (ROOT / "params.yaml").read_text()
    changed = bench.with_seed(text, 1234)
    assert yaml.safe_load(changed)["seed"] == 1234
    differing = [(a, b) for a, b in zip(text.splitlines(), changed.splitlines()) if a != b]
    assert len(differing) == 1 and differing[0][1].startswith("seed: 1234  # ")
    with pytest.raises(bench.NoiseError, match="no top-level `seed: N`"):
        bench.with_seed("data:\n  seed: 3\n", 5)


def test_the_seed_copy_has_the_code_and_data_but_no_outputs(tmp_path):
    bench = load_bench()
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src/code.py").write_text("x = 1\n")
    text = (ROOT / "params.yaml").read_text().replace(
        "input: resolved/prepare.json", "input: data/images")
    (repo / "params.yaml").write_text(text)
    for name in ("metrics/a.json", "dvc.lock", "data/images/0/a.png", "reports/x.json"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("output or data\n")
    run(repo, "git", "init", "-q")
    copy = bench.make_seed_copy(repo, tmp_path / "copy", 77)
    assert (copy / "src/code.py").read_text() == "x = 1\n"
    assert not (copy / "metrics").exists() and not (copy / "dvc.lock").exists()
    assert not (copy / "reports").exists()
    assert (copy / "data/images/0/a.png").read_text() == "output or data\n"
    params, copied = yaml.safe_load(text), yaml.safe_load((copy / "params.yaml").read_text())
    assert copied.pop("seed") == 77 and params.pop("seed") != 77 and copied == params
    assert run(copy, "git", "status", "--porcelain").stdout.strip() == "?? data/"


# --- slow: a tiny repo on real digits ----------------------------------------------------

NOISE_VARIANTS = {
    "simple_cnn": {"architecture": "simple_cnn", "filters": [8, 16, 16], "dense_units": 32},
    "regularized_cnn": {"architecture": "regularized_cnn", "filters": [8, 16],
                        "dense_units": 32},
}


def write_digits_split(root) -> None:
    """scikit-learn's digits as ``root/train/<digit>/`` and ``root/test/<digit>/`` (every fourth
    image of a digit in test): a test split no seed can change, so McNemar pairs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    for digit in range(10):
        for rank, index in enumerate(np.flatnonzero(digits.target == digit)):
            folder = root / ("test" if rank % 4 == 0 else "train") / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[index]).save(folder / f"{index:04d}.png")


def _set_params(repo, change) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def noise_repo(tmp_path_factory):
    """Two narrow variants on the digits, reproduced, the noise of two more seeds measured by
    the bench's own functions and committed: the base of the two runs below. Three runs, the
    least the report accepts and the record that once called a fresh seed real."""
    repo = make_tiny_repo(tmp_path_factory.mktemp("noise"), NOISE_VARIANTS)
    write_digits_split(repo / "data/images")

    def on_digits(params):
        params["data"].update({"source": "image_folder", "input": "data/images",
                               "train_limit": 0, "test_limit": 0})
        params["data"]["images"]["image_size"] = [28, 28]
        params["train"].update({"epochs": 8, "batch_size": 32})
    _set_params(repo, on_digits)
    dvc(repo, "add", "data/images")
    dvc(repo, "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "digits baseline")
    record = load_bench().measure_noise(repo, [43, 44], timeout=1800, log=lambda line: None)
    run(repo, "git", "add", report.NOISE_RECORD)
    run(repo, "git", "commit", "-qm", "training noise")
    return repo, record


def _rerun_and_report(noise_repo, tmp_path, change):
    repo = tmp_path / "repo"
    shutil.copytree(noise_repo[0], repo, symlinks=True)
    _set_params(repo, change)
    dvc(repo, "repro")
    return report.write_report(repo, tmp_path / "report.md", base="HEAD")


@pytest.mark.slow
@pytest.mark.minutes(3)
def test_the_record_holds_three_runs_per_variant(noise_repo):
    repo, record = noise_repo
    committed = json.loads((repo / report.NOISE_RECORD).read_text())
    assert committed == record
    card = json.loads((repo / "data/prepared/data_card.json").read_text())
    for variant in NOISE_VARIANTS:
        entry = record["variants"][variant]
        assert entry["seeds"] == [42, 43, 44] and entry["runs"] == 3
        assert entry["test_images"] == card["sizes"]["test"] > 0
        own = json.loads((repo / f"metrics/{variant}.json").read_text())["accuracy"]
        assert entry["accuracies"][0] == own
        assert entry["std"] == pytest.approx(np.std(entry["accuracies"], ddof=1))
        assert entry["fingerprint"] == noise.settings_fingerprint(noise.working_tree(repo), variant)
        assert entry["cpu"] and entry["revision"] and entry["date"]


def _print_verdicts(label, changes, record):
    for variant, change in changes.items():
        judged, accuracies = change["noise"], record["variants"][variant]["accuracies"]
        print(f"{label} {variant}: record {', '.join(f'{a:.4f}' for a in accuracies)}; new "
              f"{change['new']:.4f}, s {judged.get('std', 0) * 100:.2f} pp, used "
              f"{judged.get('spread', 0) * 100:.2f} pp, p {judged.get('p_value')}, Holm p "
              f"{judged.get('p_holm')}: {change['verdict']}")


@pytest.mark.slow
@pytest.mark.minutes(3)
def test_a_retrain_with_a_seed_outside_the_record_is_no_real_change(noise_repo, tmp_path):
    """Seed 45 in the workspace, a seed the record (42-44) does not hold: a fresh draw of the
    noise, the case that misfired when the delta was judged against s alone (simple_cnn here,
    on a 2-core AMD EPYC: 0.916 against 0.943-0.949, s 0.34 pp, called real). With the
    spread at least the test set's sampling error (1.06 pp on these 454 images at 0.946) and
    Holm over two variants, a fresh seed is called real only beyond about 7.6 pp from the
    runs' mean (|t| > 6.2 at 2 degrees of freedom); nine seeds gave s = 1.17 pp."""
    summary = _rerun_and_report(noise_repo, tmp_path, lambda p: p.update(seed=45))
    changes, record = summary["accuracy_changes"], noise_repo[1]
    _print_verdicts("seed 45", changes, record)
    assert set(changes) == set(NOISE_VARIANTS), summary["unchanged"]
    for variant, change in changes.items():
        assert change["noise"]["status"] == "judged", variant
        assert change["mcnemar"]["status"] == "compared", variant  # the fixed test split
        assert change["verdict"] == "within training noise", (variant, change)
        assert change["noise"]["spread"] >= change["noise"]["floor"] > 0
    text = (tmp_path / "report.md").read_text()
    assert "No usable training-noise record" not in text
    assert all(_cells(text, v)[7] == "within training noise" for v in NOISE_VARIANTS)


@pytest.mark.slow
@pytest.mark.minutes(3)
def test_one_epoch_is_a_real_change_for_that_variant_only(noise_repo, tmp_path):
    summary = _rerun_and_report(noise_repo, tmp_path,
                                lambda p: p["models"]["simple_cnn"].update(epochs=1))
    _print_verdicts("1 epoch", summary["accuracy_changes"], noise_repo[1])
    assert summary["verdicts"] == {"simple_cnn": "real change"}
    change = summary["accuracy_changes"]["simple_cnn"]
    assert change["delta"] < 0 and change["noise"]["p_holm"] < 0.05
    assert summary["unchanged"] == ["regularized_cnn"]  # not retrained: nothing to judge
    text = (tmp_path / "report.md").read_text()
    assert _cells(text, "simple_cnn")[7] == "**real change**"
