"""PopTorch's system-level functions and error classes, for the machine tilegraph runs on.

- ipuHardwareIsAvailable() is False and ipuHardwareVersion() is 0: tilegraph runs on this
  machine's CPU (and, later, other devices), never on IPU hardware, so scripts that branch
  on IPU hardware (e.g. to use an offline IPU target) take their no-hardware branch.
- setLogLevel(level) sets the level of the "tilegraph" Python logger (PopTorch's levels:
  TRACE=0, DEBUG=1, INFO=2, WARN=3, ERR=4, OFF=6, by number or name) and, as PopTorch
  logs to the process's stderr, gives it a stderr handler (once) unless it has one.
- Error, RecoverableError, UnrecoverableError: PopTorch's exception classes.
- nop(tensor): PopTorch's no-op (a barrier to op merging on the IPU); the tensor itself here.
"""
import logging

from ._blocks import Error

logger = logging.getLogger("tilegraph")

_LEVELS = {"TRACE": (0, 5), "DEBUG": (1, logging.DEBUG), "INFO": (2, logging.INFO),
           "WARN": (3, logging.WARNING), "ERR": (4, logging.ERROR),
           "OFF": (6, logging.CRITICAL + 10)}


class RecoverableError(Error):
    """An error after which the model can be used again (PopTorch's RecoverableError). Its
    recovery_action is "NONE": nothing needs resetting (PopTorch's IPU_RESET, PARTITION_RESET
    and FULL_RESET are about IPU hardware)."""

    @property
    def recovery_action(self):
        return "NONE"


class UnrecoverableError(Error):
    """An error after which the process must stop (PopTorch's UnrecoverableError)."""


def ipuHardwareIsAvailable(num_ipus=1):
    """False: tilegraph never runs on IPU hardware."""
    del num_ipus
    return False


def ipuHardwareVersion():
    """0: no IPU hardware (tilegraph runs on this machine's CPU)."""
    return 0


def hasMLIRSupportOnPlatform():
    """False: tilegraph compiles through its own IR, not PopTorch's MLIR dispatcher (so code
    that checks for it, e.g. before using IPUContext / IPUScope, takes its other path, as
    PopTorch's own tests skip their dispatcher cases on platforms without MLIR)."""
    return False


hasMlirSupportOnPlatform = hasMLIRSupportOnPlatform  # PopTorch 2.x's spelling


def _dispatcher_refused(name):
    from ._blocks import UnsupportedError
    raise UnsupportedError(
        f"{name}: PopTorch's dispatcher (IPUScope / IPUContext: running code on the device as "
        "it executes) is not built in tilegraph; put the code in a torch.nn.Module's forward "
        "and run it with tilegraph.inferenceModel / trainingModel (hasMLIRSupportOnPlatform() "
        "is False, as on PopTorch's platforms without the dispatcher)")


class IPUScope:
    """PopTorch's IPUScope(inputs, ...): refused by name (see _dispatcher_refused)."""

    def __init__(self, *args, **kwargs):
        del args, kwargs
        _dispatcher_refused("IPUScope")


class IPUContext:
    """poptorch.experimental.IPUContext(fn, ...): refused by name (see _dispatcher_refused)."""

    def __init__(self, *args, **kwargs):
        del args, kwargs
        _dispatcher_refused("IPUContext")


def setLogLevel(level):
    """Sets the "tilegraph" logger's level from PopTorch's level (number or name)."""
    if isinstance(level, str):
        if level.upper() not in _LEVELS:
            raise ValueError(f"Unknown log level: {level}. Valid values are DEBUG, ERR, INFO, "
                             "OFF, TRACE and WARN")
        python_level = _LEVELS[level.upper()][1]
    else:
        by_number = {number: py for number, py in _LEVELS.values()}
        if int(level) not in by_number:
            raise ValueError(f"Invalid log level integer: {level} (expected one of "
                             f"{sorted(by_number)})")
        python_level = by_number[int(level)]
    logger.setLevel(python_level)
    if not logger.handlers:
        handler = logging.StreamHandler()  # sys.stderr, looked up when a record is written
        handler.setFormatter(logging.Formatter("[tilegraph:%(levelname)s] %(message)s"))
        logger.addHandler(handler)  # records still propagate (pytest's caplog sees them)


def nop(tensor):
    """The tensor itself (on the IPU, a barrier to op merging)."""
    return tensor
