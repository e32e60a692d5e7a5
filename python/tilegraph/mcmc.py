"""Hamiltonian Monte Carlo whose whole iteration runs inside one tilegraph program.

    def log_density(q):                      # plain PyTorch, any differentiable ops
        logits = X @ q
        return -F.binary_cross_entropy_with_logits(logits, y, reduction="sum") \\
               - 0.5 * (q * q).sum() / prior_var

    sampler = tilegraph.mcmc.HMC(log_density, initial=torch.zeros(d), step_size=0.05,
                                 leapfrog_steps=10, seed=1)
    draws = sampler.sample(1000)             # one engine call: 1000 iterations on device
    draws.samples, draws.accepted, draws.momenta, draws.uniforms

"A gradient inside the computation": the user writes only the log-density, as torch code.
tilegraph captures it once (torch.export, the same front end as trainingModel), inlines it
into the program once per leapfrog position, and asks its C++ autodiff for d log p / d q at
each (`Graph.gradients`); the momentum draws, the leapfrog integration, the Metropolis
accept/reject and the state update are IR ops too. The program runs `n` iterations per call
(the engine's step loop, output mode "all"), so the host sees only the returned samples.
The per-iteration draws (initial momenta, the accept uniform) are returned as well, so a
reference sampler can replay exactly the same chain.
"""
from dataclasses import dataclass

import numpy as np
import torch

from . import _core
from ._aten import TABLE
from ._capture import _Context, export, raise_if_unsupported, tg_dtype


class _Density(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, q):
        return self.fn(q)


@dataclass
class Draws:
    samples: torch.Tensor   # [n, d], the state after each iteration
    accepted: torch.Tensor  # [n] bool
    momenta: torch.Tensor   # [n, d], the momentum drawn at the start of each iteration
    uniforms: torch.Tensor  # [n], the accept/reject uniform of each iteration


class _Inliner:
    """Emits the exported log-density into a graph any number of times, each time on a
    different IR value of q (parameters and captured tensors become shared constants)."""

    def __init__(self, fn, example, graph):
        self.ep = export(_Density(fn).eval(), (example,))
        raise_if_unsupported(self.ep.graph_module, "the log-density")
        self.cx = _Context(graph)
        self.constants = {}
        state = dict(self.ep.state_dict)
        state.update(getattr(self.ep, "constants", {}))
        self.state = state

    def __call__(self, q):
        cx, gm = self.cx, self.ep.graph_module
        cx.values = {}
        kinds = torch.export.graph_signature.InputKind
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        for node, spec in zip(placeholders, self.ep.graph_signature.input_specs):
            if spec.kind == kinds.USER_INPUT:
                cx.values[node] = q
            else:  # parameters, buffers, captured tensors: constants of the program
                if spec.target not in self.constants:
                    value = self.state[spec.target].detach().numpy()
                    self.constants[spec.target] = cx.g.add_constant(np.ascontiguousarray(value))
                cx.values[node] = self.constants[spec.target]
        for node in gm.graph.nodes:
            if node.op == "call_function":
                cx.node, cx.source = node, ""
                cx.values[node] = TABLE[node.target](cx, node, *node.args, **node.kwargs)
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0][0]
        return cx.v(out)


class HMC:
    """HMC with an identity mass matrix and a fixed step size and path length."""

    def __init__(self, log_density, initial, step_size, leapfrog_steps, seed=0):
        initial = initial.detach().clone()
        if initial.dim() != 1 or not initial.is_floating_point():
            raise ValueError(f"HMC: expected a 1-D floating initial state, got "
                             f"{initial.dtype}{list(initial.shape)}")
        if leapfrog_steps < 1 or step_size <= 0:
            raise ValueError("HMC: expected leapfrog_steps >= 1 and step_size > 0")
        self.dtype = tg_dtype(initial.dtype)
        self.torch_dtype = initial.dtype
        d = initial.shape[0]
        g = _core.Graph("hmc")
        inline = _Inliner(log_density, initial, g)
        dt = self.dtype

        def const(v):
            return g.add_constant(np.array(v, dtype=initial.numpy().dtype))

        def op(name, *ins, **attrs):
            return g.op(name, list(ins), attrs)[0]

        def log_p_and_grad(q):
            logp = inline(q)
            if g.type_of(logp)[1] != []:
                raise ValueError("HMC: log_density must return a scalar")
            return logp, g.gradients(logp, [q])[0]

        state = g.add_variable("q", dt, [d], False)
        # Autodiff stops at frozen variables; differentiate w.r.t. a copy of the state.
        q0 = op("add", state, g.add_constant(np.zeros([d], dtype=initial.numpy().dtype)))
        p0 = op("normal", shape=[d], dtype="dtype:" + dt)
        u = op("uniform", shape=[], dtype="dtype:" + dt)
        eps, half = const(step_size), const(step_size / 2)
        logp0, grad = log_p_and_grad(q0)
        q, p = q0, op("add", p0, op("mul", half, grad))  # half step for the momentum
        for i in range(leapfrog_steps):
            q = op("add", q, op("mul", eps, p))
            logp, grad = log_p_and_grad(q)
            p = op("add", p, op("mul", half if i == leapfrog_steps - 1 else eps, grad))
        # H = -log p(q) + |p|^2 / 2; accept with probability min(1, exp(H0 - H1)).
        kinetic0 = op("mul", const(0.5), op("sum", op("mul", p0, p0), axes=[], keepdim=False))
        kinetic1 = op("mul", const(0.5), op("sum", op("mul", p, p), axes=[], keepdim=False))
        log_ratio = op("sub", op("sub", logp, kinetic1), op("sub", logp0, kinetic0))
        accept = op("lt", op("log", u), log_ratio)
        q_next = op("where", accept, q, q0)
        g.set_update(state, q_next)
        for out in (q_next, accept, p0, u):
            g.add_output(out)
        self.graph = g
        self.exe = _core.Executable.compile(g, training=False, seed=seed)
        self.exe.write_variable("q", np.ascontiguousarray(initial.numpy()))

    def sample(self, n):
        """Runs n iterations in one engine call and returns every state and draw."""
        q, accepted, p0, u = self.exe.run([], steps=n, mode="all")
        return Draws(torch.from_numpy(np.asarray(q)), torch.from_numpy(np.asarray(accepted)),
                     torch.from_numpy(np.asarray(p0)), torch.from_numpy(np.asarray(u)))

    @property
    def state(self):
        return torch.from_numpy(np.asarray(self.exe.read_variable("q")))


def torch_hmc(log_density, initial, step_size, leapfrog_steps, momenta, uniforms):
    """The same HMC in plain eager PyTorch (torch.autograd for the gradient), consuming the
    given draws: momenta [n, ..., d] and uniforms [n, ...]. A leading batch of independent
    chains is allowed (initial [c, d], log_density returning [c]). The reference for tests
    and the baseline for benchmarks."""
    def grad_of(q):
        q = q.detach().requires_grad_(True)
        logp = log_density(q)
        return logp.detach(), torch.autograd.grad(logp.sum(), q)[0]

    q0 = initial.detach().clone()
    samples, accepted = [], []
    for p0, u in zip(momenta, uniforms):
        logp0, grad = grad_of(q0)
        q, p = q0, p0 + step_size / 2 * grad
        for i in range(leapfrog_steps):
            q = q + step_size * p
            logp, grad = grad_of(q)
            p = p + (step_size / 2 if i == leapfrog_steps - 1 else step_size) * grad
        log_ratio = (logp - 0.5 * (p * p).sum(-1)) - (logp0 - 0.5 * (p0 * p0).sum(-1))
        accept = torch.log(u) < log_ratio
        q0 = torch.where(accept.unsqueeze(-1), q, q0)
        samples.append(q0)
        accepted.append(accept)
    return torch.stack(samples), torch.stack(accepted)


def effective_sample_size(chain):
    """Per-coordinate ESS of a [n, d] chain (Geyer's initial positive sequence)."""
    x = chain - chain.mean(0)
    n = x.shape[0]
    spectrum = torch.fft.rfft(x, n=2 * n, dim=0)
    acov = torch.fft.irfft(spectrum * spectrum.conj(), dim=0)[:n] / n
    rho = acov / acov[0]
    ess = []
    for j in range(x.shape[1]):
        total, t = 0.0, 1
        while t + 1 < n:
            pair = float(rho[t, j] + rho[t + 1, j])
            if pair < 0:
                break
            total += pair
            t += 2
        ess.append(n / (1 + 2 * total))
    return torch.tensor(ess)
