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


class Stack(torch.nn.Module):
    """An LSTM of any configuration, its output, final states and a loss on all three."""

    def __init__(self, **config):
        super().__init__()
        self.lstm = torch.nn.LSTM(**config)

    def forward(self, x, *state):
        out, (h, c) = self.lstm(x, tuple(state) if state else None)
        loss = out.square().mean() + h.sin().sum() + c.cos().sum()
        return out, h, c, loss


_CONFIGS = {
    "one_layer": dict(input_size=5, hidden_size=4),
    "batch_first_two_layers": dict(input_size=5, hidden_size=4, num_layers=2, batch_first=True),
    "bidirectional_three_layers": dict(input_size=5, hidden_size=3, num_layers=3,
                                       bidirectional=True),
    "no_bias_bidirectional_batch_first": dict(input_size=5, hidden_size=4, bias=False,
                                              bidirectional=True, batch_first=True),
}


@pytest.mark.parametrize("config", list(_CONFIGS), ids=list(_CONFIGS))
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
def test_lstm_layers_are_lstm_layer_ops_with_eager_numbers(config, with_state):
    """Every nn.LSTM configuration compiles to one lstm_layer op per layer and direction (no
    cell per time step) and infers and trains like eager: outputs, final states, and the
    weights after SGD steps (the gradients of all three results, through
    lstm_layer_backward)."""
    from tilegraph._capture import capture
    torch.manual_seed(0)
    model = Stack(**_CONFIGS[config])
    lstm = model.lstm
    directions = 2 if lstm.bidirectional else 1
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 5, generator=g)  # [B, T, I] or [T, B, I]: both are valid
    state = ()
    if with_state:
        shape = (lstm.num_layers * directions, 3 if lstm.batch_first else 7, lstm.hidden_size)
        state = (torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    graph = str(capture(copy.deepcopy(model), (x, *state)).graph)
    assert graph.count("lstm_layer(") == lstm.num_layers * directions
    assert "sigmoid" not in graph
    reference = copy.deepcopy(model)
    out = tilegraph.inferenceModel(copy.deepcopy(model))(x, *state)
    for got, want in zip(out, reference(x, *state)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert_trains_like_eager(model, (x, *state), steps=4, atol=1e-5)


def test_lstm_input_and_state_gradients_match_eager():
    """The gradients reaching the sequence and the initial states (a model that trains
    what feeds the LSTM, and the states it starts from)."""
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(4, 6)
            self.h0 = torch.nn.Parameter(torch.randn(2, 1, 5))
            self.c0 = torch.nn.Parameter(torch.randn(2, 1, 5))
            self.lstm = torch.nn.LSTM(6, 5, bidirectional=True)

        def forward(self, x):
            b = x.shape[1]
            out, _ = self.lstm(self.embed(x), (self.h0.expand(2, b, 5).contiguous(),
                                               self.c0.expand(2, b, 5).contiguous()))
            return out, out[-1].sum() + out[0].square().sum()

    model = Encoder()
    x = torch.randn(9, 2, 4, generator=torch.Generator().manual_seed(2))
    assert_trains_like_eager(model, (x,), steps=3, lr=0.05, atol=1e-5)


def test_lstm_in_double_precision_and_long_sequences():
    """f64 models, and a sequence of 200 steps: one op, compiled in seconds (unrolled, a
    graph of ~3,000 cell ops forward and more backward)."""
    torch.manual_seed(0)
    model = Stack(input_size=3, hidden_size=4, num_layers=2).double()
    x = torch.randn(200, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert_trains_like_eager(model, (x,), steps=2, rtol=1e-10, atol=1e-10)


def test_lstm_with_projections_falls_back_to_the_unrolled_cells():
    """proj_size (a projected hidden state) is outside lstm_layer: torch's decomposition
    unrolls it over the steps, with eager's numbers."""
    torch.manual_seed(0)
    model = Stack(input_size=5, hidden_size=6, proj_size=3, num_layers=2)
    x = torch.randn(4, 2, 5, generator=torch.Generator().manual_seed(4))
    assert_trains_like_eager(model, (x,), steps=3, atol=1e-5)


def test_lstm_dropout_between_layers_is_identity_in_eval_and_random_in_training():
    torch.manual_seed(0)
    model = Stack(input_size=5, hidden_size=4, num_layers=2, dropout=0.5)
    x = torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(5))
    model.eval()
    reference = copy.deepcopy(model)
    for got, want in zip(tilegraph.inferenceModel(model)(x), reference(x)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    model.train()
    trainer = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(),
                                                                       lr=0.0))
    dropped = trainer(x)[0]
    # Layer 2 reads layer 1's output with about half of it zeroed and the rest doubled: not
    # eval's output, and finite.
    assert torch.isfinite(dropped).all()
    assert not torch.allclose(dropped, reference(x)[0], atol=1e-3)


class GruStack(torch.nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.gru = torch.nn.GRU(**config)

    def forward(self, x, *state):
        out, h = self.gru(x, *state)
        return out, h, out.square().mean() + h.sin().sum()


@pytest.mark.parametrize("config", list(_CONFIGS), ids=list(_CONFIGS))
def test_gru_layers_are_gru_layer_ops_with_eager_numbers(config):
    """nn.GRU likewise: one gru_layer op per layer and direction, eager's outputs, final
    state and weights after training (with an initial state given)."""
    from tilegraph._capture import capture
    torch.manual_seed(0)
    model = GruStack(**_CONFIGS[config])
    gru = model.gru
    directions = 2 if gru.bidirectional else 1
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 5, generator=g)
    h0 = torch.randn(gru.num_layers * directions, 3 if gru.batch_first else 7, gru.hidden_size,
                     generator=g)
    graph = str(capture(copy.deepcopy(model), (x, h0)).graph)
    assert graph.count("gru_layer(") == gru.num_layers * directions
    assert "sigmoid" not in graph
    reference = copy.deepcopy(model)
    for got, want in zip(tilegraph.inferenceModel(copy.deepcopy(model))(x, h0),
                         reference(x, h0)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert_trains_like_eager(model, (x, h0), steps=4, atol=1e-5)
    assert_trains_like_eager(GruStack(**_CONFIGS[config]), (x,), steps=2, atol=1e-5)


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU], ids=["lstm", "gru"])
def test_half_and_mixed_precision_recurrent_layers_train_near_fp32(cell):
    """model.half() takes torch's unrolled cells (computed widened, rounded per op);
    setMixedPrecision keeps the layer ops in f32. Both train within half precision's band
    of the fp32 eager losses (eager's own bf16 LSTM needs oneDNN bf16 kernels, absent on
    AVX2-only CPUs, so fp32 is the reference)."""
    torch.manual_seed(0)
    base = Tagger(cell)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(4, 6, 8, generator=g), torch.randint(0, 3, (4,), generator=g)
    h0 = torch.zeros(2, 4, 12)
    state = (h0, h0) if cell is torch.nn.LSTM else h0
    reference = copy.deepcopy(base)
    eager = torch.optim.SGD(reference.parameters(), lr=0.1)
    want = []
    for _ in range(3):
        eager.zero_grad()
        loss = reference(x, t, state)[-1]
        loss.backward()
        eager.step()
        want.append(float(loss))
    half = copy.deepcopy(base).half()
    half_state = tuple(s.half() for s in state) if isinstance(state, tuple) else state.half()
    trainer = tilegraph.trainingModel(half, optimizer=torch.optim.SGD(half.parameters(), lr=0.1))
    got = [float(trainer(x.half(), t, half_state)[-1]) for _ in range(3)]
    assert got == pytest.approx(want, abs=2e-2)
    mixed = copy.deepcopy(base)
    opts = tilegraph.Options()
    opts.Precision.setMixedPrecision(torch.bfloat16)
    trainer = tilegraph.trainingModel(mixed, opts, torch.optim.SGD(mixed.parameters(), lr=0.1))
    got = [float(trainer(x, t, state)[-1]) for _ in range(3)]
    assert got == pytest.approx(want, abs=2e-2)
