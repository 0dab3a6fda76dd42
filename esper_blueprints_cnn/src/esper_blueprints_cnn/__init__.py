"""Esper's convolutional seed blueprints, packaged as a plugin.

The pack registers eight blueprints for the ``cnn`` topology through its entry point (see
:mod:`esper_blueprints_cnn.plugin`); use them through the core registry, for example
``esper_core.create_blueprint("cnn", "conv_light", 64)``. The building blocks are public so
other packs can reuse them: :func:`get_num_groups` (the GroupNorm group rule),
:class:`SeedConvBlock`, the seed classes, and the closed-form counts.
"""

from __future__ import annotations

from esper_blueprints_cnn.blocks import SeedConvBlock, seed_conv_block_params
from esper_blueprints_cnn.catalogue import SPECS, TOPOLOGY
from esper_blueprints_cnn.groups import GROUP_CANDIDATES, MIN_GROUP_SIZE, SeedGroupNorm, get_num_groups
from esper_blueprints_cnn.seeds import (
    BottleneckSeed,
    DepthwiseSeed,
    NoopSeed,
    NormSeed,
    ResidualConvSeed,
    SqueezeExcitationSeed,
)

__version__ = "0.1.0"

__all__ = [
    "GROUP_CANDIDATES",
    "MIN_GROUP_SIZE",
    "SPECS",
    "TOPOLOGY",
    "BottleneckSeed",
    "DepthwiseSeed",
    "NoopSeed",
    "NormSeed",
    "ResidualConvSeed",
    "SeedConvBlock",
    "SeedGroupNorm",
    "SqueezeExcitationSeed",
    "__version__",
    "get_num_groups",
    "seed_conv_block_params",
]
