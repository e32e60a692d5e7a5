# Generates the PyTorch reference values in dense_ops_test.cc (run: python3 dense_ops_expected.py).
# Inputs are deterministic: input j, element i = 2*sin(0.37*i + j) (positive variants:
# 0.5 + |sin(0.37*i + j)|); each case records the output shape, sum(out[i] * cos(0.1*i)),
# and the first and last elements.
import math
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def inp(shape, j, positive=False):
    n = math.prod(shape)
    v = torch.tensor([math.sin(0.37 * i + j) for i in range(n)])
    v = 0.5 + v.abs() if positive else 2 * v
    return v.reshape(shape)


def summary(name, t):
    f = t.reshape(-1)
    w = torch.tensor([math.cos(0.1 * i) for i in range(f.numel())])
    shape = ",".join(str(d) for d in t.shape)
    print(f'    {{"{name}", {{{shape}}}, {float((f * w).sum()):.12g}, {float(f[0]):.12g}, '
          f'{float(f[-1]):.12g}}},')


def mm(name, a, b, ta, tb):
    A, B = inp(a, 0), inp(b, 1)
    summary(name, torch.matmul(A.transpose(-1, -2) if ta else A, B.transpose(-1, -2) if tb else B))


mm("mm_batched_b2d", [2, 3, 4], [4, 5], False, False)
mm("mm_ta_tb", [2, 4, 3], [2, 5, 4], True, True)
mm("mm_broadcast", [2, 1, 3, 4], [3, 4, 2], False, False)
mm("mm_a2d_tb", [3, 4], [2, 5, 4], False, True)
summary("conv_groups", F.conv2d(inp([2, 4, 7, 6], 0), inp([6, 2, 3, 3], 1), stride=(2, 1),
                                padding=(1, 2), dilation=(1, 2), groups=2))
summary("conv_depthwise", F.conv2d(inp([1, 3, 6, 6], 0), inp([3, 1, 3, 3], 1), stride=2,
                                   padding=1, groups=3))
summary("max_ceil", F.max_pool2d(inp([1, 2, 7, 7], 0), 3, 2, 1, ceil_mode=True))
summary("max_dil", F.max_pool2d(inp([1, 1, 8, 8], 0), 2, 1, 0, dilation=2))
summary("max_rect_ceil", F.max_pool2d(inp([1, 2, 6, 5], 0), (3, 2), (2, 1), (1, 1), ceil_mode=True))
summary("avg_ceil_nopad", F.avg_pool2d(inp([1, 2, 6, 6], 0), 3, 2, 1, ceil_mode=True,
                                       count_include_pad=False))
summary("avg_ceil_pad", F.avg_pool2d(inp([1, 2, 6, 6], 0), 3, 2, 1, ceil_mode=True))
summary("avg_div", F.avg_pool2d(inp([1, 1, 5, 5], 0), 2, 1, divisor_override=3))
summary("avg_ceil_edge", F.avg_pool2d(inp([1, 1, 5, 5], 0), 2, 2, 1, ceil_mode=True))
summary("adaptive_down", F.adaptive_avg_pool2d(inp([1, 2, 7, 5], 0), (3, 2)))
summary("adaptive_up", F.adaptive_avg_pool2d(inp([1, 1, 3, 3], 0), (4, 5)))
x, w, b = inp([2, 3, 4, 4], 0), inp([3], 1), inp([3], 2)
summary("bn_train_y", F.batch_norm(x, None, None, w, b, training=True, eps=1e-5))
summary("bn_train_mean", x.mean((0, 2, 3)))
summary("bn_train_invstd", 1 / (x.var((0, 2, 3), unbiased=False) + 1e-5).sqrt())
summary("bn_train_var", x.var((0, 2, 3), unbiased=False))
summary("bn_infer", F.batch_norm(x, inp([3], 3), inp([3], 4, True), w, b, training=False,
                                 eps=1e-3))
x, w, b = inp([2, 3, 4], 0), inp([3, 4], 1), inp([3, 4], 2)
summary("ln2_y", F.layer_norm(x, [3, 4], w, b, eps=1e-5))
summary("ln2_mean", x.mean((1, 2)))
summary("ln2_rstd", 1 / (x.var((1, 2), unbiased=False) + 1e-5).sqrt())
