"""torch.nn.LSTM and GRU as users call them (batch_first, several layers, an initial state
passed as a tuple, the final state returned), in inference and training, against eager."""
import copy

import pytest
import torch
import torch.nn.functional as F

import tilegraph
from parity import assert_trains_like_eager


class Tagger(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(8, 12, num_layers=2, batch_first=True)
        self.fc = torch.nn.Linear(12, 3)

    def forward(self, x, t, state):
        out, last = self.rnn(x, state)
        logits = self.fc(out[:, -1])
        return logits, last, F.cross_entropy(logits, t)


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU], ids=["lstm", "gru"])
def test_recurrent_layers_infer_and_train_like_eager(cell):
    torch.manual_seed(0)
    model = Tagger(cell)
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(4, 6, 8, generator=g), torch.randint(0, 3, (4,), generator=g)
    h0 = torch.randn(2, 4, 12, generator=g)
    state = (h0, torch.zeros(2, 4, 12)) if cell is torch.nn.LSTM else h0
    logits, last, _ = tilegraph.inferenceModel(model)(x, t, state)
    ref_logits, ref_last, _ = reference(x, t, state)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
    for a, b in zip(last if isinstance(last, tuple) else (last,),
                    ref_last if isinstance(ref_last, tuple) else (ref_last,)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert_trains_like_eager(model, (x, t, state), steps=5, atol=1e-5)
