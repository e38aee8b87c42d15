import pytest
import torch

from celltune.checkpoint import ModelCard, load_checkpoint, resolve_checkpoint, save_checkpoint
from celltune.models import create_model


def test_checkpoint_is_plain_data_and_round_trips(tmp_path):
    model, _ = create_model("resnet18", num_classes=3, pretrained=False)
    card = ModelCard(model_name="resnet18", class_names=["a", "b", "c"], mean=[0.5] * 3, std=[0.25] * 3,
                     image_size=48)
    save_checkpoint(tmp_path / "best.pt", model=model, card=card, extra={"epoch": 4})
    raw = torch.load(tmp_path / "best.pt", weights_only=True)  # no pickled classes inside
    assert raw["class_names"] == ["a", "b", "c"] and raw["image_size"] == 48 and raw["epoch"] == 4
    loaded, loaded_card, _ = load_checkpoint(tmp_path)  # a run directory resolves to its best.pt
    assert loaded_card == card
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x))


def test_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a celltune checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
