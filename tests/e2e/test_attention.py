"""Attention as one op: F.scaled_dot_product_attention is captured whole and compiled to
tilegraph's fused attention (online softmax: no [Sq, Sk] score matrix stored), with
additive and boolean masks broadcast as users pass them, causal masking, dropout, and its
backward; grouped-query heads are written out as matmul / softmax / matmul. Inference
and training against eager PyTorch."""
import copy
import re

import pytest
import torch
import torch.nn.functional as F

import tilegraph
from parity import assert_trains_like_eager


class SelfAttention(torch.nn.Module):
    def __init__(self, variant, d=16, heads=2):
        super().__init__()
        self.variant, self.heads = variant, heads
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, 3)

    def forward(self, x, t, pad):
        b, s, d = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        kwargs = {}
        if self.variant == "causal":
            kwargs["is_causal"] = True
        elif self.variant == "bool_padding":
            kwargs["attn_mask"] = pad[:, None, None, :]  # [B, 1, 1, S], True = attend
        elif self.variant == "additive_per_query":
            kwargs["attn_mask"] = torch.linspace(-1, 1, s * s).reshape(s, s)  # [S, S]
        elif self.variant == "scale":
            kwargs["scale"] = 0.3
        h = F.scaled_dot_product_attention(q, k, v, **kwargs)
        out = self.proj(h.transpose(1, 2).reshape(b, s, d).mean(1))
        return out, F.cross_entropy(out, t)


@pytest.fixture(autouse=True)
def fused_attention_always(monkeypatch):
    """These small cases would be written out as matmul + softmax ("auto" fuses only large
    score matrices): force the fused op."""
    monkeypatch.setenv("TILEGRAPH_FUSED_ATTENTION", "always")


@pytest.mark.parametrize("variant", ["plain", "causal", "bool_padding", "additive_per_query",
                                     "scale"])
def test_fused_attention_matches_eager(variant):
    torch.manual_seed(0)
    model = SelfAttention(variant)
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 6, 16, generator=g), torch.randint(0, 3, (3,), generator=g)
    pad = torch.ones(3, 6, dtype=torch.bool)
    pad[1, 4:] = False
    infer = tilegraph.inferenceModel(model)
    torch.testing.assert_close(infer(x, t, pad)[0], reference(x, t, pad)[0], rtol=1e-5,
                               atol=1e-6)
    assert " = attention(" in infer.executable.optimized_ir  # one op, not matmul + softmax
    assert_trains_like_eager(model, (x, t, pad), steps=4)


def test_a_learned_additive_bias_gets_its_gradient():
    """A trainable attention bias (relative-position style) passed as the mask: its
    gradient comes from the fused backward's score gradient."""
    class Biased(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(2, 5, 5))
            self.qkv = torch.nn.Linear(8, 24)

        def forward(self, x):
            q, k, v = self.qkv(x).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias).pow(2).mean()

    torch.manual_seed(0)
    model = Biased()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 5, 8)
    tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0))(x)
    reference(x).backward()
    torch.testing.assert_close(model.bias.detach(), -reference.bias.grad, rtol=1e-5, atol=1e-7)


def test_grouped_heads_are_written_out():
    class Gqa(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(2, 4, 5, 8, generator=g), torch.randn(2, 2, 5, 8, generator=g), \
        torch.randn(2, 2, 5, 8, generator=g)
    torch.testing.assert_close(tilegraph.inferenceModel(Gqa())(q, k, v), Gqa()(q, k, v),
                               rtol=1e-5, atol=1e-6)


def test_dropout_is_fused_unbiased_and_fresh_every_step():
    """Dropout inside the fused op. With q = 0 every probability is 1/S, and with v the
    identity out[i, j] = z_ij / S: each is 0 with probability p, else 1 / (S (1 - p))
    (binomial bounds, 5 sigma), and the draws differ between calls. (That the backward
    regenerates the forward's mask is the op's float64 gradient check in C++.)"""
    class Dropped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, q, v):
            out = F.scaled_dot_product_attention(q, q, v * self.w, dropout_p=0.3)
            return out, out.sum()

    s, p = 32, 0.3
    q, v = torch.zeros(2, 4, s, 8), torch.eye(s).expand(2, 4, s, s).contiguous()
    # A training program (an inference one runs dropout as the identity, as PopTorch's).
    model = Dropped()
    run = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    out, _ = run(q, v)
    assert " = attention(" in run.executable.optimized_ir
    zero = out == 0
    assert torch.allclose(out[~zero], torch.tensor(1 / (s * (1 - p))))
    n = out.numel()
    assert abs(zero.sum().item() - n * p) < 5 * (n * p * (1 - p)) ** 0.5
    assert not torch.equal(run(q, v)[0], out)


def test_long_sequences_do_not_store_the_score_matrix(monkeypatch):
    """4 heads x 2048 x 2048 scores would be 64 MiB in f32: "auto" fuses them, and the
    planned memory stays far below that."""
    monkeypatch.delenv("TILEGRAPH_FUSED_ATTENTION")
    class Long(torch.nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q, is_causal=True)

    q = torch.randn(1, 4, 2048, 16) * 0.1
    run = tilegraph.inferenceModel(Long())
    out = run(q)
    torch.testing.assert_close(out, Long()(q), rtol=1e-4, atol=1e-5)
    assert " = attention(" in run.executable.optimized_ir
    assert run.executable.memory_stats["arena_bytes"] < 16 * 2 ** 20


def test_auto_fuses_f32_attention_and_writes_out_small_f64_attention(monkeypatch):
    """Under "auto": f32 programs, inference and training, take the fused op at any size
    (both kernels register-blocked); f64 attention with small score matrices is written out
    as matmul / softmax / matmul (its kernel is the plain loop)."""
    monkeypatch.setenv("TILEGRAPH_FUSED_ATTENTION", "auto")

    class Small(torch.nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q)

    q = torch.randn(1, 2, 8, 4)
    run = tilegraph.inferenceModel(Small())
    torch.testing.assert_close(run(q), Small()(q), rtol=1e-5, atol=1e-6)
    assert " = attention(" in run.executable.optimized_ir
    run64 = tilegraph.inferenceModel(Small())
    torch.testing.assert_close(run64(q.double()), Small()(q.double()))
    assert " = attention(" not in run64.executable.optimized_ir
    torch.manual_seed(0)
    model = SelfAttention("causal")
    reference = copy.deepcopy(model)
    x, t = torch.randn(2, 6, 16), torch.randint(0, 3, (2,))
    mask = torch.ones(2, 6, dtype=torch.bool)
    trainer = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(),
                                                                       lr=0.1))
    trainer(x, t, mask)
    assert " = attention(" in trainer.executable.optimized_ir
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    reference(x, t, mask)[-1].backward()
    opt.step()
    for (name, p), q_ in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.detach(), q_.detach(), rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("mode", ["always", "never"])
def test_a_fully_masked_sample_gives_zeros_and_finite_gradients_as_in_eager(monkeypatch, mode):
    """A padded batch can hold a sample whose keys are all masked (HF models with an
    all-zero attention_mask row): PyTorch's SDPA gives 0 there, not softmax's NaN, and
    training on the batch stays finite. Both the fused op and the written-out form."""
    monkeypatch.setenv("TILEGRAPH_FUSED_ATTENTION", mode)
    torch.manual_seed(0)
    model = SelfAttention("bool_padding")
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 6, 16, generator=g), torch.randint(0, 3, (3,), generator=g)
    pad = torch.ones(3, 6, dtype=torch.bool)
    pad[1] = False  # every key of sample 1 masked
    reference = copy.deepcopy(model)
    got = tilegraph.inferenceModel(model)(x, t, pad)[0]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, reference(x, t, pad)[0], rtol=1e-5, atol=1e-6)
    assert_trains_like_eager(model, (x, t, pad), steps=3)


class TorchMultiheadAttention(torch.nn.Module):
    """nn.MultiheadAttention(batch_first=True) as torchvision's ViT calls it."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(d, heads, batch_first=True)
        self.head = torch.nn.Linear(d, 3)

    def forward(self, x, t):
        h, _ = self.attention(x, x, x, need_weights=False)
        out = self.head(h.mean(1))
        return out, F.cross_entropy(out, t)


def test_multihead_attentions_in_projection_reads_its_weight_once(monkeypatch):
    """torch decomposes the in-projection of a batch_first nn.MultiheadAttention (a 3-D input
    transposed, times a 2-D weight) into bmm(x, expand(weight)): the weight copied once per
    sequence position, [50, 32, 96] here (17 GiB of constants for torchvision's ViT-B/16 at
    224x224). The matmul reads the weight itself, one GEMM over the folded batch; values
    and three training steps as in eager."""
    monkeypatch.delenv("TILEGRAPH_FUSED_ATTENTION")
    torch.manual_seed(0)
    model = TorchMultiheadAttention()
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 50, 32, generator=g), torch.randint(0, 3, (2,), generator=g)
    infer = tilegraph.inferenceModel(model.eval())
    torch.testing.assert_close(infer(x, t)[0], reference.eval()(x, t)[0], rtol=1e-5, atol=1e-6)
    ir = infer.executable.optimized_ir
    assert "f32[50,32,96]" not in ir and "expand(" not in ir, ir
    # (with its bias: matmul_epilogue, the same-shape view torch writes between them gone)
    assert re.search(r"= matmul_epilogue\(%v\d+, %attention\.in_proj_weight, "
                     r"%attention\.in_proj_bias\)", ir), ir
    infer.destroy()
    assert_trains_like_eager(model.train(), (x, t), steps=3)


@pytest.mark.parametrize("sq,sk,d,dv,variant", [
    (1, 1, 3, 5, "none"), (7, 5, 16, 16, "additive"), (9, 17, 20, 5, "causal"),
    (33, 40, 16, 64, "bool"), (16, 33, 8, 12, "bool_all_masked"), (40, 40, 16, 16, "causal")])
def test_the_f32_forward_kernel_matches_eager_on_ragged_shapes(sq, sk, d, dv, variant):
    """The f32 kernel's row blocks (8 queries), key vectors (16) and value columns (4 at a
    time) at sizes that leave every kind of remainder; masks additive per query, boolean,
    a sample with every key masked, and causal with fewer or more keys than queries."""
    g = torch.Generator().manual_seed(sq * 100 + sk)
    q, k = torch.randn(2, 3, sq, d, generator=g), torch.randn(2, 3, sk, d, generator=g)
    v = torch.randn(2, 3, sk, dv, generator=g)
    mask = None
    if variant == "additive":
        mask = torch.randn(sq, sk, generator=g)
    elif variant.startswith("bool"):
        mask = torch.rand(2, 1, 1, sk, generator=g) > 0.3
        mask[..., 0] = True
        if variant.endswith("all_masked"):
            mask[1] = False

    class Attend(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  is_causal=variant == "causal")

    run = tilegraph.inferenceModel(Attend())
    got = run(q, k, v)
    assert " = attention(" in run.executable.optimized_ir
    torch.testing.assert_close(got, Attend()(q, k, v), rtol=1e-5, atol=1e-6)
