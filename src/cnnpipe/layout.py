"""Where each stage reads and writes, relative to the repository root (mirrors dvc.yaml)."""

from pathlib import Path

PARAMS = Path("params.yaml")
PREPARED = Path("data/prepared")
PROCESSED = Path("data/processed")
DATA_CARD = PREPARED / "data_card.json"
PREPROCESSING = PROCESSED / "preprocessing.json"
SPLITS = ("train", "val", "test")


def model_dir(variant: str) -> Path:
    return Path("models") / variant


def model_file(variant: str) -> Path:
    return model_dir(variant) / "model.keras"


def weights_file(variant: str) -> Path:
    return model_dir(variant) / "model.weights.h5"


def model_card(variant: str) -> Path:
    return model_dir(variant) / "model_card.json"


def live_dir(variant: str) -> Path:
    return Path("dvclive") / variant


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


def plot_table(kind: str, variant: str) -> Path:
    """Per-variant data behind a DVC plot: calibration, roc, precision_recall."""
    return Path("plots") / kind / f"{variant}.csv"


def speed_metrics(variant: str) -> Path:
    return Path("metrics/speed") / f"{variant}.json"
