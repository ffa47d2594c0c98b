"""Errors that carry a one-line message meant for the person running the pipeline."""


class CnnpipeError(Exception):
    """Base for failures the user can fix (bad params, missing files, bad data)."""


class ConfigError(CnnpipeError):
    """params.yaml holds an unknown key, a wrong type or an impossible value."""


class DataError(CnnpipeError):
    """A dataset is missing, corrupt or fails its checksum."""


class TrainingError(CnnpipeError):
    """Training diverged (NaN loss) or could not start."""
