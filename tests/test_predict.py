import pytest
import torch
from torch import nn

from celltune.predict import batch_probs


class _Corner(nn.Module):
    """Logits from the top-left pixel only, so each flip/rotation view gives a different answer."""

    def forward(self, x):  # (B, 3, H, W) -> (B, 2)
        v = x[:, 0, 0, 0]
        return torch.stack([v, -v], dim=1)


def test_tta_averages_softmax_over_the_views():
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, 0, 0] = 2.0  # only the identity view (and the transpose-like ones keeping this corner) see it
    model = _Corner()
    none = batch_probs(model, x, "none")
    assert none[0, 0] == pytest.approx(torch.softmax(torch.tensor([2.0, -2.0]), 0)[0])
    flips = batch_probs(model, x, "flips")
    seen, unseen = torch.softmax(torch.tensor([2.0, -2.0]), 0), torch.softmax(torch.tensor([0.0, 0.0]), 0)
    assert torch.allclose(flips[0], (seen + 3 * unseen) / 4)
    dihedral = batch_probs(model, x, "dihedral")
    # Of the 8 symmetries of the square, 2 keep the top-left corner in place (identity and the diagonal mirror).
    assert torch.allclose(dihedral[0], (2 * seen + 6 * unseen) / 8)
    assert torch.allclose(dihedral.sum(1), torch.ones(1))


def test_unknown_tta_is_rejected():
    with pytest.raises(ValueError, match="dihedral"):
        batch_probs(_Corner(), torch.zeros(1, 3, 2, 2), "spin")
