"""Boolean-mask selections x[mask] feeding row-wise work and reductions compile without a
data-dependent shape (tilegraph/_ragged.py): all rows are kept with the mask as their
validity, reductions count the valid ones. Losses, gradients and weights match eager
PyTorch's compacted computation; other uses are refused with the user's line."""
import pytest
import torch
import torch.nn.functional as F

import tilegraph
from parity import assert_trains_like_eager


class TokenTagger(torch.nn.Module):
    """Token classification trained only on the tokens a mask keeps, the way training
    scripts write it: the loss over logits[mask] and labels[mask]."""

    def __init__(self, loss):
        super().__init__()
        self.embed, self.head = torch.nn.Embedding(20, 8), torch.nn.Linear(8, 5)
        self.loss = loss

    def forward(self, ids, mask, labels):
        logits = self.head(torch.tanh(self.embed(ids)))
        picked = logits[mask]
        if self.loss == "cross_entropy":
            loss = F.cross_entropy(picked, labels[mask])
        elif self.loss == "bce":  # ELECTRA's discriminator loss
            loss = F.binary_cross_entropy_with_logits(picked[:, 0], labels[mask].float())
        elif self.loss == "max":
            loss = picked.amax(dim=1).max() - picked.min()
        else:  # a linear layer on the selected rows, then a summed squared error
            loss = (self.head(picked.tanh()[:, :4].repeat(1, 2)) ** 2).sum(dim=1).mean()
        return logits, loss


def _tokens():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 20, (3, 6), generator=g)
    mask = torch.rand(3, 6, generator=g) > 0.4
    labels = torch.randint(0, 2, (3, 6), generator=g)
    return ids, mask, labels


@pytest.mark.parametrize("loss", ["cross_entropy", "bce", "max", "linear"])
def test_losses_over_masked_rows_train_like_eager(loss):
    torch.manual_seed(0)
    assert_trains_like_eager(TokenTagger(loss), _tokens(), steps=3, lr=0.5)


def test_rows_left_out_cannot_poison_the_gradient():
    """log(p[mask]) where the rows left out hold p = 0: log(0) = -inf there, which eager
    never computes; here it must reach neither the loss nor the gradients."""
    class LogOfSelected(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.full((2,), 0.9))

        def forward(self, p, mask):
            return (-torch.log(p[mask] * self.w)).mean()

    p = torch.tensor([[0.5, 0.2], [0.0, 0.0], [0.9, 0.3], [0.0, 0.7]])
    mask = p.amin(dim=1) > 0  # rows 0 and 2
    assert_trains_like_eager(LogOfSelected(), (p, mask), steps=2, loss_of=lambda out: out)


def test_returning_or_mixing_selected_rows_is_refused_with_the_line():
    class Returns(torch.nn.Module):
        def forward(self, x, mask):
            return x[mask] * 2

    class Mixes(torch.nn.Module):
        def forward(self, x, mask):
            return x[mask].cumsum(0).sum()

    x, mask = torch.randn(5, 3), torch.tensor([True, False, True, True, False])
    with pytest.raises(NotImplementedError, match=r"returned from the model.*"
                                                  r"test_masked_selection.py:\d+"):
        tilegraph.inferenceModel(Returns())(x, mask)
    with pytest.raises(NotImplementedError, match=r"cumsum.*test_masked_selection.py:\d+"):
        tilegraph.inferenceModel(Mixes())(x, mask)


def test_a_new_mask_each_call_gives_eager_results():
    """The mask is data: one compiled program serves masks with any number of rows."""
    class MeanOfSelected(torch.nn.Module):
        def forward(self, x, mask):
            return (x[mask] ** 2).mean(), x[mask].sum(0)

    engine = tilegraph.inferenceModel(MeanOfSelected())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 2, generator=g)
    for keep in ([1, 0, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 1], [1] * 7):
        mask = torch.tensor(keep, dtype=torch.bool)
        for got, want in zip(engine(x, mask), MeanOfSelected()(x, mask)):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
