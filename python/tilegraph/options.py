"""poptorch.options: PopTorch's module of option classes, under its names (its tests and
popdist import ConfigFileError and _DistributedOptions from here). The classes live in
_options.py; `tilegraph.Options` is the one users build."""
from ._options import (ConfigFileError, Options, TensorLocationSettings,  # noqa: F401
                       _DistributedOptions, _JitOptions, _PopartOptions, _PrecisionOptions,
                       _TensorLocationOptions, _TrainingOptions)

__all__ = ["ConfigFileError", "Options", "TensorLocationSettings"]
