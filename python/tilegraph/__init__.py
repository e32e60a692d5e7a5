"""tilegraph: run PyTorch models through a whole-program C++ compiler and runtime.

This package currently exposes the C++ core (`tilegraph._core`): graph building over the
registered ops, C++ autodiff and optimizer generation, compilation and execution. The
PopTorch-compatible front end (trainingModel / inferenceModel) builds on it.
"""

from . import _core
from ._core import Executable, Graph, registered_ops

__all__ = ["Executable", "Graph", "registered_ops", "_core"]
__version__ = "0.1.0"
