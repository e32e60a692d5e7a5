"""PopTorch's fps, nearest (torch_cluster's operators) and ctc_beam_search_decoder, compiled
through tilegraph, against references written here from the definitions: torch_cluster's
fps algorithm in PyTorch, brute-force nearest points, and CTC decoding by summing over every
alignment. The model shapes and calls are those of PopTorch's own tests (fps_test.py,
ctc_decoder_test.py)."""
import copy
import itertools
import math

import numpy as np
import pytest
import torch

import tilegraph as poptorch


# ---- references ------------------------------------------------------------------------------

def fps_reference(src, ptr, ratio, starts=None):
    """torch_cluster.fps on segments [ptr[i], ptr[i + 1]): counts ceil(size * ratio) in src's
    dtype; from each segment's start, the point farthest from those taken, repeatedly."""
    out = []
    for s, (a, b) in enumerate(zip(ptr, ptr[1:])):
        y = src[a:b]
        count = int(torch.ceil(torch.tensor(b - a, dtype=src.dtype) *
                               torch.tensor(ratio, dtype=src.dtype)))
        if count == 0:
            continue
        current = 0 if starts is None else starts[s]
        out.append(a + current)
        dist = (y - y[current]).pow(2).sum(1)
        for _ in range(1, count):
            current = int(torch.argmax(dist))
            out.append(a + current)
            dist = torch.minimum(dist, (y - y[current]).pow(2).sum(1))
    return torch.tensor(out, dtype=torch.long)


def nearest_reference(x, y, batch_x, batch_y):
    d = (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)
    d = torch.where(batch_x[:, None] == batch_y[None, :], d, torch.tensor(float("inf")))
    return torch.argmin(d, dim=1)


def ctc_sequence_probabilities(log_probs, length, blank):
    """Every label sequence of one sample with its probability, summed over all alignments."""
    probs = {}
    classes = log_probs.shape[1]
    for labels in itertools.product(range(classes), repeat=length):
        p = math.exp(sum(float(log_probs[f, c]) for f, c in enumerate(labels)))
        seq = tuple(c for f, c in enumerate(labels)
                    if c != blank and (f == 0 or labels[f - 1] != c))
        probs[seq] = probs.get(seq, 0.0) + p
    return sorted(probs.items(), key=lambda kv: -kv[1])


# ---- fps -------------------------------------------------------------------------------------

class FpsInferModel(torch.nn.Module):
    def forward(self, x, ptr, ratio, random_start):
        return poptorch.fps(x, ptr, ratio, random_start)


@pytest.mark.parametrize("src_shape", [(1, 2), (2, 19), (3, 10), (19, 3)])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 1.0])
def test_fps_single_segment(src_shape, ratio):
    torch.manual_seed(0)
    src = torch.rand(src_shape)
    ptr = [0, src_shape[0]]
    got = poptorch.inferenceModel(FpsInferModel())(src, ptr, ratio, random_start=False)
    want = fps_reference(src, ptr, ratio)
    assert got.dtype == torch.long
    assert torch.equal(got, want)


@pytest.mark.parametrize("ptr", [[0, 13, 19], [0, 2, 3, 4, 9, 11, 19], [0, 1, 3, 4, 9, 18, 19]])
@pytest.mark.parametrize("ratio", [0.4, 0.6, 1.0])
def test_fps_segments(ptr, ratio):
    torch.manual_seed(1)
    src = torch.rand(19, 3)
    got = poptorch.inferenceModel(FpsInferModel())(src, ptr, ratio, random_start=False)
    assert torch.equal(got, fps_reference(src, ptr, ratio))


def test_fps_counts_round_in_the_points_dtype():
    """ceil(10 * 0.3) is 3 in float32 (torch_cluster's arithmetic), 4 if computed as
    10 * float32(0.3) in double."""
    src = torch.rand(10, 2)
    got = poptorch.fps(src, [0, 10], 0.3)
    assert got.shape == (3,)


@pytest.mark.parametrize("ptr", [[0, 29], [0, 2, 6, 11, 28, 29]])
@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_fps_random_start(ptr, ratio):
    torch.manual_seed(2)
    src = torch.rand(29, 3)
    model = poptorch.inferenceModel(FpsInferModel())
    firsts = set()
    for _ in range(4):
        got = model(src, ptr, ratio, random_start=True)
        # Each segment's sample is FPS from the point it starts at, which lies in the segment.
        starts, offset = [], 0
        for a, b in zip(ptr, ptr[1:]):
            count = math.ceil((b - a) * ratio)
            starts.append(int(got[offset]) - a)
            assert 0 <= starts[-1] < b - a
            offset += count
        assert torch.equal(got, fps_reference(src, ptr, ratio, starts))
        firsts.add(int(got[0]))
    assert len(firsts) > 1, "random_start drew the same start point four times"


class FpsTrainModel(torch.nn.Module):
    def __init__(self, op, linear):
        super().__init__()
        self.loss_fn = torch.nn.MSELoss()
        self.linear = linear
        self.op = op

    def forward(self, x, ptr, ratio, random_start):
        result = self.op(x, ptr, ratio, random_start).float()
        result = self.linear(result)
        return result, self.loss_fn(result, torch.ones_like(result))


@pytest.mark.parametrize("ptr", [[0, 29], [0, 2, 6, 11, 28, 29]])
@pytest.mark.parametrize("ratio", [0.15, 0.7, 1.0])
def test_fps_in_a_training_model(ptr, ratio):
    torch.manual_seed(3)
    src = torch.rand(29, 3)
    out_size = int(np.cumsum(np.ceil(np.diff(ptr) * ratio).astype(int))[-1])
    linear = torch.nn.Linear(out_size, out_size)
    ref_linear = copy.deepcopy(linear)
    model = poptorch.trainingModel(FpsTrainModel(poptorch.fps, linear),
                                   optimizer=torch.optim.SGD(linear.parameters(), lr=0.01))
    got, loss = model(src, ptr, ratio, random_start=False)
    ref_op = lambda x, p, r, rs: fps_reference(x, p, r)  # noqa: E731
    want, want_loss = FpsTrainModel(ref_op, ref_linear)(src, ptr, ratio, False)
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, want_loss.detach(), rtol=1e-5, atol=1e-6)
    # The optimizer step reached the linear layer's weights as in eager.
    want_loss.backward()
    with torch.no_grad():
        for p in ref_linear.parameters():
            p -= 0.01 * p.grad
    model.copyWeightsToHost()
    torch.testing.assert_close(linear.weight, ref_linear.weight, rtol=1e-5, atol=1e-6)


def test_fps_eager_equals_compiled():
    torch.manual_seed(4)
    src = torch.randn(40, 5, dtype=torch.float64)
    ptr = [0, 17, 40]
    compiled = poptorch.inferenceModel(FpsInferModel())(src, ptr, 0.5, False)
    assert torch.equal(poptorch.fps(src, ptr, 0.5), compiled)
    assert torch.equal(compiled, fps_reference(src, ptr, 0.5))


def test_fps_errors():
    src = torch.rand(5, 2)
    with pytest.raises(poptorch.Error, match="`ptr` must be a list"):
        poptorch.fps(src, (0, 5))
    with pytest.raises(poptorch.Error, match="at least 2"):
        poptorch.fps(src, [0])
    with pytest.raises(poptorch.Error, match="`ratio` must be of float type"):
        poptorch.fps(src, [0, 5], 1)
    with pytest.raises(poptorch.Error, match="from 0 to the number of points 5"):
        poptorch.fps(src, [0, 3, 6])


# ---- nearest ---------------------------------------------------------------------------------

class NearestModel(torch.nn.Module):
    def forward(self, x, y, batch_x, batch_y):
        return poptorch.nearest(x, y, batch_x, batch_y)


def test_nearest_with_batch_tensors():
    torch.manual_seed(5)
    x, y = torch.randn(40, 3), torch.randn(12, 3)
    batch_x = torch.tensor([0] * 10 + [1] * 20 + [3] * 10)
    batch_y = torch.tensor([0] * 3 + [1] * 5 + [2] * 2 + [3] * 2)
    got = poptorch.inferenceModel(NearestModel())(x, y, batch_x, batch_y)
    assert got.dtype == torch.long
    assert torch.equal(got, nearest_reference(x, y, batch_x, batch_y))


def test_nearest_without_batches_and_with_lists():
    torch.manual_seed(6)
    x, y = torch.randn(30, 2), torch.randn(7, 2)
    zeros_x, zeros_y = torch.zeros(30, dtype=torch.long), torch.zeros(7, dtype=torch.long)
    want = nearest_reference(x, y, zeros_x, zeros_y)
    assert torch.equal(poptorch.inferenceModel(NearestModel())(x, y, None, None), want)
    bx, by = [0] * 15 + [1] * 15, [0] * 3 + [1] * 4
    want = nearest_reference(x, y, torch.tensor(bx), torch.tensor(by))
    assert torch.equal(poptorch.inferenceModel(NearestModel())(x, y, bx, by), want)
    assert torch.equal(poptorch.nearest(x, y, bx, by), want)  # eager: the same kernels


def test_nearest_batch_without_candidates_raises():
    x, y = torch.randn(4, 2), torch.randn(3, 2)
    bx, by = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0])
    model = poptorch.inferenceModel(NearestModel())
    with pytest.raises(Exception, match="batch 1, which has no points in y"):
        model(x, y, bx, by)
    ok = torch.tensor([0, 0, 0, 0])  # the engine is usable afterwards
    assert torch.equal(model(x, y, ok, by), nearest_reference(x, y, ok, by))


# ---- ctc_beam_search_decoder ------------------------------------------------------------------

class CtcModel(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, log_probs, lengths):
        return poptorch.ctc_beam_search_decoder(log_probs, lengths, **self.kw)


@pytest.mark.parametrize("trace_model", [True, False])
def test_ctc_decoder_shapes(trace_model):
    """PopTorch's ctc_decoder_test."""
    input_size, batch_size, num_classes = 9, 3, 10
    torch.manual_seed(42)
    log_probs = torch.randn(input_size, batch_size, num_classes)
    lengths = torch.randint(5, input_size, (batch_size,), dtype=torch.int)
    options = poptorch.Options()
    options.Jit.traceModel(trace_model)
    result = poptorch.inferenceModel(CtcModel(), options)(log_probs, lengths)
    assert result[0].shape == (batch_size, 1)
    assert result[1].shape == (batch_size, 1)
    assert result[2].shape == (batch_size, 1, input_size)
    assert result[1].dtype == result[2].dtype == torch.int32


def test_ctc_decoder_finds_the_most_probable_sequences():
    torch.manual_seed(7)
    frames, batch, classes, top = 5, 3, 3, 4
    log_probs = torch.randn(frames, batch, classes).mul(2).log_softmax(-1)
    lengths = torch.tensor([5, 4, 2])
    model = poptorch.inferenceModel(CtcModel(blank=1, beam_width=64, top_paths=top))
    scores, path_lengths, paths = model(log_probs, lengths)
    for i in range(batch):
        want = ctc_sequence_probabilities(log_probs[:, i], int(lengths[i]), blank=1)
        for k in range(min(top, len(want))):
            seq, p = want[k]
            assert int(path_lengths[i, k]) == len(seq)
            assert tuple(paths[i, k, :len(seq)].tolist()) == seq
            assert paths[i, k, len(seq):].eq(0).all()
            assert float(scores[i, k]) == pytest.approx(math.log(p), rel=1e-5, abs=1e-5)
        for k in range(len(want), top):  # fewer sequences than paths (the length-2 sample)
            assert float(scores[i, k]) == -math.inf and int(path_lengths[i, k]) == 0


def test_ctc_decoder_eager_equals_compiled_and_narrow_beams_keep_order():
    torch.manual_seed(8)
    log_probs = torch.randn(30, 4, 6).log_softmax(-1)
    lengths = torch.tensor([30, 21, 1, 0], dtype=torch.int32)
    compiled = poptorch.inferenceModel(CtcModel(beam_width=8, top_paths=3))(log_probs, lengths)
    eager = poptorch.ctc_beam_search_decoder(log_probs, lengths, beam_width=8, top_paths=3)
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b)
    scores = compiled[0]
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert float(scores[3, 0]) == 0.0 and int(compiled[1][3, 0]) == 0  # an empty input


def test_ctc_decoder_errors():
    log_probs = torch.randn(4, 2, 3)
    lengths = torch.tensor([4, 4])
    with pytest.raises(poptorch.Error, match="probs must be a torch.tensor"):
        poptorch.ctc_beam_search_decoder(log_probs.tolist(), lengths)
    with pytest.raises(poptorch.Error, match="top_paths <= beam_width"):
        poptorch.ctc_beam_search_decoder(log_probs, lengths, beam_width=2, top_paths=3)
    with pytest.raises(poptorch.Error, match="blank 3 out of range"):
        poptorch.ctc_beam_search_decoder(log_probs, lengths, blank=3)
    model = poptorch.inferenceModel(CtcModel())
    with pytest.raises(Exception, match=r"lengths\[1\] = 5 out of range \[0, 4\]"):
        model(log_probs, torch.tensor([4, 5]))
