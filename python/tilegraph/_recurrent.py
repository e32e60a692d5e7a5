"""torch.nn.LSTM as tilegraph's lstm_layer ops (src/ops/lstm.cc): one op per layer and
direction, instead of torch's decomposition into a cell per time step.

nn.LSTM calls `torch.lstm`; while the capture traces, `layers_for_lstm()` (a torch function
mode) answers that call with `lstm` below, which writes the layers as
`torch.ops.tilegraph.lstm_layer` calls and the glue between them (batch_first transposes, the two directions' concatenation, dropout between
layers in training, the final states) in ATen ops. What lstm_layer does not cover falls back
to torch's own decomposition (unrolled over the time steps): projections (proj_size), half
precision values (computed op by op, as before) and anything but f32 / f64.
(Without the mode, torch.export records `aten.lstm.input` but computes its shapes by running
torch's decomposition cell by cell on fake tensors: 13 s for 3 layers of 200 steps. The
capture's decomposition table also maps `aten.lstm.input` to `lstm`, for an LSTM that
reaches the graph another way.)

The backward is tilegraph's: lstm_layer's gradient rule (backpropagation through time in one
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


def lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
         batch_first):
    """aten.lstm.input's semantics with lstm_layer ops where they apply (see above)."""
    directions = 2 if bidirectional else 1
    per_direction = 4 if has_biases else 2
    if (input.dtype not in (torch.float32, torch.float64) or input.dim() != 3
            or len(params) != num_layers * directions * per_direction
            or any(p.dtype != input.dtype for p in (*params, *hx))):
        # projections (5 or 3 tensors per direction), half precision: torch's decomposition
        return _torch_lstm(input, hx, params, has_biases, num_layers, dropout, train,
                           bidirectional, batch_first)
    x = input.transpose(0, 1) if batch_first else input
    h0, c0 = hx
    h_n, c_n = [], []
    for layer in range(num_layers):
        outputs = []
        for d in range(directions):
            index = layer * directions + d
            w = params[index * per_direction:(index + 1) * per_direction]
            bias = w[2] + w[3] if has_biases else w[0].new_zeros(w[0].shape[0])
            y, c, _ = torch.ops.tilegraph.lstm_layer(x, h0[index], c0[index], w[0], w[1], bias,
                                                     d == 1)
            last = 0 if d == 1 else -1  # the reverse direction ends at time 0
            h_n.append(y[last])
            c_n.append(c[last])
            outputs.append(y)
        x = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        if dropout and train and layer < num_layers - 1:
            x = aten.dropout(x, dropout, True)
    output = x.transpose(0, 1) if batch_first else x
    return output, torch.stack(h_n), torch.stack(c_n)


class layers_for_lstm(torch.overrides.TorchFunctionMode):
    """While active, torch.lstm on padded sequences (nn.LSTM's call) is `lstm`; packed
    sequences (torch.lstm's other form, batch sizes as its second argument) and LSTMs under
    torch.autocast (which runs them in the autocast dtype) are left alone."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.lstm and len(args) == 9 and not kwargs and \
                isinstance(args[1], (tuple, list)) and not torch.is_autocast_enabled("cpu"):
            return lstm(*args)
        return func(*args, **kwargs)


def _lstm_layer_op(cx, n, x, h0, c0, w_ih, w_hh, bias, reverse):
    return list(cx.ops("lstm_layer", [cx.v(v) for v in (x, h0, c0, w_ih, w_hh, bias)],
                       {"reverse": bool(reverse)}, 3))


def register(table):
    """Adds the converter to the capture's table (_aten.TABLE)."""
    table[torch.ops.tilegraph.lstm_layer.default] = _lstm_layer_op
