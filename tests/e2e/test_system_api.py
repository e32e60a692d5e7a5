"""PopTorch's system functions and error classes (issue 13, part): what they report and do
on the machines tilegraph runs on."""
import logging

import pytest
import torch

import tilegraph as poptorch


def test_no_ipu_hardware_is_reported():
    assert poptorch.ipuHardwareIsAvailable() is False
    assert poptorch.ipuHardwareIsAvailable(4) is False
    assert poptorch.ipuHardwareVersion() == 0


def test_set_log_level_sets_the_tilegraph_logger():
    logger = logging.getLogger("tilegraph")
    saved = logger.level
    try:
        poptorch.setLogLevel("DEBUG")
        assert logger.level == logging.DEBUG
        poptorch.setLogLevel(3)  # WARN
        assert logger.level == logging.WARNING
        poptorch.setLogLevel("OFF")
        assert logger.level > logging.CRITICAL
        with pytest.raises(ValueError, match="Unknown log level: LOUD. Valid values are"):
            poptorch.setLogLevel("LOUD")
        with pytest.raises(ValueError, match="Invalid log level integer"):
            poptorch.setLogLevel(9)
    finally:
        logger.setLevel(saved)


def test_error_classes_form_poptorchs_hierarchy():
    assert issubclass(poptorch.RecoverableError, poptorch.Error)
    assert issubclass(poptorch.UnrecoverableError, poptorch.Error)
    assert issubclass(poptorch.Error, RuntimeError)
    with pytest.raises(poptorch.Error):
        raise poptorch.RecoverableError("the model can be used again")


def test_nop_returns_its_tensor_inside_a_compiled_model():
    class Model(torch.nn.Module):
        def forward(self, x):
            return poptorch.nop(x * 2) + 1

    x = torch.randn(3)
    torch.testing.assert_close(poptorch.inferenceModel(Model())(x), x * 2 + 1)
