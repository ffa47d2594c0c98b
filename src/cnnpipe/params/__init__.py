"""Stage params: read params.yaml as DVC does, validate it in full, write each stage's
resolved settings. Only this stage (and the tools) import this package: the other stages
read the resolved files, so editing a default here re-runs exactly the stages it changes."""

from cnnpipe.params.resolve import resolved_configs, with_overrides
from cnnpipe.params.schema import Params, load_params, parse_params, read_yaml

__all__ = [
    "Params", "load_params", "parse_params", "read_yaml", "resolved_configs", "with_overrides",
]
