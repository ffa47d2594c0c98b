"""CNN architectures, built by name: ``build_model("simple_cnn", (28, 28, 1), 10, **hp)``.

Importing this package imports TensorFlow/Keras and registers every architecture.
"""

from cnnpipe.models.registry import (
    ModelConfigError,
    available_models,
    build_model,
    register_model,
    validate_hyperparameters,
)
from cnnpipe.models.layers import classification_head_loss

# Imported for its side effect too: the @register_model decorators fill the registry.
from cnnpipe.models.architectures import find_backbone, set_base_trainable

__all__ = [
    "ModelConfigError",
    "available_models",
    "build_model",
    "classification_head_loss",
    "find_backbone",
    "register_model",
    "set_base_trainable",
    "validate_hyperparameters",
]
