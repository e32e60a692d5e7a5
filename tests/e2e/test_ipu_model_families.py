"""The IPU Model computes what the CPU device computes on the model families tilegraph is
checked on (tilegraph.zoo, the CI-sized configurations): two training calls on each device
from the same initial weights give bit-identical losses and weights. The IPU Model only adds
its estimate (docs/IPU_MODEL.md); out-of-memory is allowed here, since fitting is not what
is compared. (MCMC runs through tilegraph.mcmc's own executor, not a trainingModel.)"""
import copy

import pytest
import torch

import tilegraph as poptorch
from tilegraph import zoo

FAMILIES = {
    "resnet": lambda: zoo.resnet18("small", batch=2),
    "resnext": lambda: zoo.resnext50_32x4d("small", batch=2),
    "efficientnet": lambda: zoo.efficientnet_b0("small", batch=2),
    "bert": lambda: zoo.bert_pretraining("small", batch=2, seq=16),
    "speech": lambda: zoo.wav2vec2_ctc("small", batch=2),
}


def _train_twice(model, inputs, options):
    trainer = poptorch.trainingModel(model, options,
                                     poptorch.optim.SGD(model.parameters(), lr=0.01,
                                                        momentum=0.9))
    losses = [trainer(*inputs)[-1].detach().clone() for _ in range(2)]
    trainer.copyWeightsToHost()
    return trainer, torch.stack(losses)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_on_the_ipu_model_is_bit_identical_to_the_cpu_device(family):
    case = FAMILIES[family]()
    cpu_model = case.train_model
    ipu_model = copy.deepcopy(cpu_model)
    _, cpu_losses = _train_twice(cpu_model, case.train_inputs, poptorch.Options())
    trainer, ipu_losses = _train_twice(
        ipu_model, case.train_inputs,
        poptorch.Options().useIpuModel(True, allow_out_of_memory=True))
    assert torch.isfinite(cpu_losses).all()
    assert cpu_losses[0] != cpu_losses[1]  # the first step changed the weights
    assert torch.equal(ipu_losses, cpu_losses), (ipu_losses - cpu_losses).abs().max()
    cpu_state, ipu_state = cpu_model.state_dict(), ipu_model.state_dict()
    assert cpu_state.keys() == ipu_state.keys()
    for key in cpu_state:
        assert torch.equal(cpu_state[key], ipu_state[key]), key
    report = trainer.ipuModelReport()
    assert report["estimate"] is True and report["total_cycles"] > 0
