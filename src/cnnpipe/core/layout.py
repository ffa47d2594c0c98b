"""Where each stage reads and writes, relative to the repository root (mirrors dvc.yaml)."""

from pathlib import Path

PARAMS = Path("params.yaml")
RESOLVED = Path("resolved")  # the params stage's output: each stage's settings, defaults filled in
PREPARED = Path("data/prepared")
PROCESSED = Path("data/processed")
DATA_CARD = PREPARED / "data_card.json"
PREPROCESSING = PROCESSED / "preprocessing.json"
SPLITS = ("train", "val", "test")


def split_dir(split: str) -> Path:
    """A prepared split: uint8 record shards (cnnpipe.core.shards), read as a stream."""
    return PREPARED / split


# The files of a trained variant's folder (train writes them; inference reads them).
MODEL_FILE = "model.keras"
WEIGHTS_FILE = "model.weights.h5"
CARD_FILE = "model_card.json"


def model_dir(variant: str) -> Path:
    return Path("models") / variant


def model_file(variant: str) -> Path:
    return model_dir(variant) / MODEL_FILE


def weights_file(variant: str) -> Path:
    return model_dir(variant) / WEIGHTS_FILE


def model_card(variant: str) -> Path:
    return model_dir(variant) / CARD_FILE


def train_metrics(variant: str) -> Path:
    return Path("metrics/train") / f"{variant}.json"


def eval_metrics(variant: str) -> Path:
    return Path("metrics") / f"{variant}.json"


def curve_table(metric: str, variant: str) -> Path:
    return Path("plots/curves") / metric / f"{variant}.csv"


def confusion_table(variant: str) -> Path:
    return Path("plots/confusion") / f"{variant}.csv"


def image_dir(variant: str) -> Path:
    return Path("plots/images") / variant


REPORTS = Path("reports")
LEADERBOARD_CSV = REPORTS / "leaderboard.csv"
LEADERBOARD_MD = REPORTS / "leaderboard.md"
TRANSFER_MD = REPORTS / "transfer.md"
COMPARE_IMAGES = Path("plots/images/compare")
DATA_QUALITY_JSON = REPORTS / "data_quality.json"
DATA_QUALITY_MD = REPORTS / "data_quality.md"
CLASS_BALANCE = Path("plots/class_balance.csv")


PLOT_KINDS = ("calibration", "roc", "precision_recall")


def plot_table(kind: str, variant: str) -> Path:
    """Per-variant data behind a DVC plot: calibration, roc, precision_recall."""
    return Path("plots") / kind / f"{variant}.csv"


def speed_metrics(variant: str) -> Path:
    # Timings vary run to run and no stage reads them: kept out of metrics/, compare's input.
    return REPORTS / "speed" / f"{variant}.json"


def resolved(stage: str) -> Path:
    return RESOLVED / f"{stage}.json"


def resolved_train(variant: str) -> Path:
    return RESOLVED / "train" / f"{variant}.json"


def evaluation_detail(variant: str) -> Path:
    """Per-class scores and the other evaluation numbers that are not headline metrics."""
    return REPORTS / "evaluation" / f"{variant}.json"


def predictions_file(variant: str) -> Path:
    """(label, predicted class) per test image, for the paired test in `cnnpipe report`."""
    return REPORTS / "predictions" / f"{variant}.npy"


EXPORT_DIR = "export"


def export_dir(variant: str) -> Path:
    """What export@<variant> writes: SavedModel (TF Serving layout), ONNX, LiteRT, its card."""
    return model_dir(variant) / EXPORT_DIR


def export_report(variant: str, suffix: str) -> Path:
    """The export stage's parity report, ``.json`` or ``.md`` (a tracked report, not a metric)."""
    return REPORTS / "export" / f"{variant}{suffix}"


def variant_outputs(variant: str) -> list[Path]:
    """Everything train@<variant> and evaluate@<variant> write (files and folders)."""
    return [
        model_dir(variant),
        train_metrics(variant),
        eval_metrics(variant),
        evaluation_detail(variant),
        predictions_file(variant),
        speed_metrics(variant),
        curve_table("accuracy", variant),
        curve_table("loss", variant),
        confusion_table(variant),
        *(plot_table(kind, variant) for kind in PLOT_KINDS),
        image_dir(variant),
        resolved_train(variant),
        export_report(variant, ".json"),
        export_report(variant, ".md"),
    ]


def variants_on_disk() -> set[str]:
    """Variant names that left outputs behind: the model folders and evaluation metrics."""
    names = {path.name for path in Path("models").glob("*") if path.is_dir()}
    names |= {path.stem for path in Path("metrics").glob("*.json")}
    names |= {path.stem for path in (RESOLVED / "train").glob("*.json")}
    return names
