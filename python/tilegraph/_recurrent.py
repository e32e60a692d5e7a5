"""torch.nn.LSTM and torch.nn.GRU as tilegraph's lstm_layer / gru_layer ops
(src/ops/recurrent.cc): one op per layer and direction, instead of torch's decomposition into
a cell per time step.

nn.LSTM calls `torch.lstm` (nn.GRU `torch.gru`); while the capture traces,
`recurrent_layers()` (a torch function mode) answers those calls with `lstm` / `gru` below,
which write the layers as `torch.ops.tilegraph.lstm_layer` / `gru_layer` calls and the glue
between them (batch_first transposes, the two directions' concatenation, dropout between
layers in training, the final states) in ATen ops. What lstm_layer does not cover falls back
to torch's own decomposition (unrolled over the time steps): projections (proj_size), half
precision values (computed op by op, as before) and anything but f32 / f64.
(Without the mode, torch.export records `aten.lstm.input` but computes its shapes by running
torch's decomposition cell by cell on fake tensors: 13 s for 3 layers of 200 steps. The
capture's decomposition table also maps `aten.lstm.input` / `aten.gru.input` to them, for
a layer that reaches the graph another way.)

The backward is tilegraph's: each op's gradient rule (backpropagation through time in one
kernel). The custom op's eager implementation (a plain loop of torch ops) serves calls
outside a capture only.
"""
from typing import Tuple

import torch

aten = torch.ops.aten


@torch.library.custom_op("tilegraph::lstm_layer", mutates_args=())
def _lstm_layer(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor,
                w_hh: torch.Tensor, bias: torch.Tensor,
                reverse: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, B, I] -> (y [T, B, H], cell states [T, B, H], activated gates [T, B, 4H])."""
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    h, c = h0, c0
    ys, cs, gs = [None] * x.shape[0], [None] * x.shape[0], [None] * x.shape[0]
    for t in steps:
        i, f, g, o = (x[t] @ w_ih.t() + bias + h @ w_hh.t()).chunk(4, dim=-1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = f * c + i * g
        h = o * c.tanh()
        ys[t], cs[t], gs[t] = h, c, torch.cat([i, f, g, o], dim=-1)
    return torch.stack(ys), torch.stack(cs), torch.stack(gs)


@_lstm_layer.register_fake
def _(x, h0, c0, w_ih, w_hh, bias, reverse):
    t, b, hidden = x.shape[0], x.shape[1], w_hh.shape[1]
    return (x.new_empty((t, b, hidden)), x.new_empty((t, b, hidden)),
            x.new_empty((t, b, 4 * hidden)))


def _torch_lstm(*args):
    from torch._decomp import decomposition_table
    return decomposition_table[aten.lstm.input](*args)


def _applies(input, states, params, num_layers, directions, per_direction):
    """Whether the layer ops compute this call: f32 / f64 throughout, a batched sequence and
    the plain weights (projections give 5 or 3 tensors per direction)."""
    return (input.dtype in (torch.float32, torch.float64) and input.dim() == 3
            and len(params) == num_layers * directions * per_direction
            and all(p.dtype == input.dtype for p in (*params, *states)))


def _stack_layers(input, params, per_direction, num_layers, dropout, train, bidirectional,
                  batch_first, layer):
    """The layers over the sequence: `layer(x, index, weights, reverse)` runs one layer
    and direction and returns (y [T, B, H], its final states). Returns the output and, per
    state, the finals of every layer and direction stacked."""
    directions = 2 if bidirectional else 1
    x = input.transpose(0, 1) if batch_first else input
    finals = []
    for depth in range(num_layers):
        outputs = []
        for d in range(directions):
            index = depth * directions + d
            y, states = layer(x, index, params[index * per_direction:(index + 1) *
                                               per_direction], d == 1)
            finals.append(states)
            outputs.append(y)
        x = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        if dropout and train and depth < num_layers - 1:
            x = aten.dropout(x, dropout, True)
    output = x.transpose(0, 1) if batch_first else x
    return (output, *(torch.stack(list(s)) for s in zip(*finals)))


def _last(reverse):
    """The time index a direction ends at."""
    return 0 if reverse else -1


def lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
         batch_first):
    """aten.lstm.input's semantics with lstm_layer ops where they apply (see above)."""
    per_direction = 4 if has_biases else 2
    if not _applies(input, hx, params, num_layers, 2 if bidirectional else 1, per_direction):
        return _torch_lstm(input, hx, params, has_biases, num_layers, dropout, train,
                           bidirectional, batch_first)
    h0, c0 = hx

    def layer(x, index, w, reverse):
        bias = w[2] + w[3] if has_biases else w[0].new_zeros(w[0].shape[0])
        y, c, _ = torch.ops.tilegraph.lstm_layer(x, h0[index], c0[index], w[0], w[1], bias,
                                                 reverse)
        return y, (y[_last(reverse)], c[_last(reverse)])
    return _stack_layers(input, params, per_direction, num_layers, dropout, train,
                         bidirectional, batch_first, layer)


@torch.library.custom_op("tilegraph::gru_layer", mutates_args=())
def _gru_layer(x: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
               b_ih: torch.Tensor, b_hh: torch.Tensor,
               reverse: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, B, I] -> (y [T, B, H], activated gates r, z, n [T, B, 3H], h w_hn^T + b_hn)."""
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    h = h0
    ys, gs, ps = [None] * x.shape[0], [None] * x.shape[0], [None] * x.shape[0]
    for t in steps:
        q_r, q_z, q_n = (x[t] @ w_ih.t() + b_ih).chunk(3, dim=-1)
        p_r, p_z, p_n = (h @ w_hh.t() + b_hh).chunk(3, dim=-1)
        r, z = (q_r + p_r).sigmoid(), (q_z + p_z).sigmoid()
        n = (q_n + r * p_n).tanh()
        h = (1 - z) * n + z * h
        ys[t], gs[t], ps[t] = h, torch.cat([r, z, n], dim=-1), p_n
    return torch.stack(ys), torch.stack(gs), torch.stack(ps)


@_gru_layer.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, reverse):
    t, b, hidden = x.shape[0], x.shape[1], w_hh.shape[1]
    return (x.new_empty((t, b, hidden)), x.new_empty((t, b, 3 * hidden)),
            x.new_empty((t, b, hidden)))


def _torch_gru(*args):
    from torch._decomp import decomposition_table
    return decomposition_table[aten.gru.input](*args)


def gru(input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
        batch_first):
    """aten.gru.input's semantics with gru_layer ops where they apply (as `lstm`)."""
    per_direction = 4 if has_biases else 2
    if not _applies(input, (hx,), params, num_layers, 2 if bidirectional else 1,
                    per_direction):
        return _torch_gru(input, hx, params, has_biases, num_layers, dropout, train,
                          bidirectional, batch_first)

    def layer(x, index, w, reverse):
        zeros = w[0].new_zeros(w[0].shape[0])
        b_ih, b_hh = (w[2], w[3]) if has_biases else (zeros, zeros)
        y, _, _ = torch.ops.tilegraph.gru_layer(x, hx[index], w[0], w[1], b_ih, b_hh, reverse)
        return y, (y[_last(reverse)],)
    return _stack_layers(input, params, per_direction, num_layers, dropout, train,
                         bidirectional, batch_first, layer)


class recurrent_layers(torch.overrides.TorchFunctionMode):
    """While active, torch.lstm / torch.gru on padded sequences (nn.LSTM's and nn.GRU's
    calls: the weights third, has_biases fourth) are `lstm` / `gru`; packed sequences
    (batch sizes second, the weights fourth) and layers under torch.autocast (which
    runs them in the autocast dtype) are left alone."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        layers = {torch.lstm: lstm, torch.gru: gru}.get(func)
        if layers is not None and len(args) == 9 and not kwargs and \
                isinstance(args[2], (tuple, list)) and isinstance(args[3], bool) and \
                not torch.is_autocast_enabled("cpu"):
            return layers(*args)
        return func(*args, **kwargs)


def _lstm_layer_op(cx, n, x, h0, c0, w_ih, w_hh, bias, reverse):
    return list(cx.ops("lstm_layer", [cx.v(v) for v in (x, h0, c0, w_ih, w_hh, bias)],
                       {"reverse": bool(reverse)}, 3))


def _gru_layer_op(cx, n, x, h0, w_ih, w_hh, b_ih, b_hh, reverse):
    return list(cx.ops("gru_layer", [cx.v(v) for v in (x, h0, w_ih, w_hh, b_ih, b_hh)],
                       {"reverse": bool(reverse)}, 3))


def register(table):
    """Adds the converters to the capture's table (_aten.TABLE)."""
    table[torch.ops.tilegraph.lstm_layer.default] = _lstm_layer_op
    table[torch.ops.tilegraph.gru_layer.default] = _gru_layer_op
