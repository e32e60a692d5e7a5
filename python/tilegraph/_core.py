"""tilegraph._core: the C++ core, loaded from the build for this CPU (see _isa.py).

Importing this module replaces it in sys.modules by the extension module itself, so
`from tilegraph import _core` and `tilegraph._core.X` reach the C++ bindings directly.
"""
import importlib.util as _util
import sys as _sys

from . import _isa

_name, _path = _isa.choose()
_spec = _util.spec_from_file_location(__name__, _path)
_module = _util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_sys.modules[__name__] = _module
