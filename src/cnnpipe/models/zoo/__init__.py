"""The registered architectures, a module each: schema, trunk, memory walk, tiny config.

Importing this package registers them all; nothing here imports TensorFlow until a trunk
is applied.
"""

from cnnpipe.models.zoo import (  # noqa: F401
    bn_gap_cnn,
    inception_attention,
    mobilenet_transfer,
    overfit_cnn,
    regularized_cnn,
    residual_cnn,
    simple_cnn,
)
