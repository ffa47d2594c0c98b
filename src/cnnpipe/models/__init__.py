"""CNN architectures: one registration each (``cnnpipe.models.zoo``), one skeleton.

Importing this package does not import TensorFlow: the registrations (schemas, memory walks,
input needs) are read by params validation, which must stay fast. Building goes through
:func:`cnnpipe.models.skeleton.build_model`, which imports Keras.
"""

from cnnpipe.models.registry import (
    Architecture,
    FineTuneSplit,
    InputNeeds,
    ModelConfigError,
    available_models,
    check_num_classes,
    find_architecture,
    get_architecture,
    register_architecture,
    registered,
)


def classification_head_loss(num_classes: int) -> str:
    """The loss matching the skeleton's head for integer labels: a sigmoid unit for two
    classes, softmax otherwise."""
    check_num_classes(num_classes)
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


__all__ = [
    "Architecture",
    "FineTuneSplit",
    "InputNeeds",
    "ModelConfigError",
    "available_models",
    "classification_head_loss",
    "find_architecture",
    "get_architecture",
    "register_architecture",
    "registered",
]
