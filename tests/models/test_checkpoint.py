import dataclasses
import pickle
import warnings

import pytest
import torch

from celltune.errors import CheckpointError, MissingError
from celltune.models.checkpoint import ModelCard, load_checkpoint, read_checkpoint, replace_card, save_checkpoint
from celltune.models.factory import create_model


def _card(**kw) -> ModelCard:
    return ModelCard(model_name="resnet18", class_names=["a", "b", "c"], mean=[0.5] * 3, std=[0.25] * 3,
                     image_size=48, **kw)


def test_checkpoint_is_plain_data_and_round_trips(tmp_path):
    model, _ = create_model("resnet18", num_classes=3, pretrained=False)
    card = _card()
    save_checkpoint(tmp_path / "best.pt", model=model, card=card, extra={"epoch": 4})
    raw = torch.load(tmp_path / "best.pt", weights_only=True)  # no pickled classes inside
    assert raw["class_names"] == ["a", "b", "c"] and raw["image_size"] == 48 and raw["epoch"] == 4
    loaded, loaded_card, _ = load_checkpoint(tmp_path)  # a run directory resolves to its best.pt
    assert loaded_card == card
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x))


def test_replace_card_keeps_weights_and_run_data(tmp_path):
    model, _ = create_model("resnet18", num_classes=3, pretrained=False)
    save_checkpoint(tmp_path / "best.pt", model=model, card=_card(multilabel=True), extra={"epoch": 2})
    replace_card(tmp_path / "best.pt", dataclasses.replace(_card(multilabel=True), thresholds=[0.3, 0.5, 0.7]))
    data = read_checkpoint(tmp_path / "best.pt")
    assert data["thresholds"] == [0.3, 0.5, 0.7] and data["epoch"] == 2
    assert torch.equal(data["state_dict"]["fc.weight"], model.state_dict()["fc.weight"])
    assert not (tmp_path / "best.partial").exists()


def test_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(MissingError, match="no checkpoint"):
        read_checkpoint(tmp_path)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a celltune checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_pickle_a_torn_file_or_a_newer_format_is_refused_in_one_line(tmp_path):
    class Payload:
        def __reduce__(self):  # would run code if unpickled with weights_only=False
            return (print, ("pwned",))

    torch.save({"model": Payload()}, tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match=r"best\.pt: not a celltune checkpoint: it holds pickled Python "
                                              r"objects.*give a run directory or the best\.pt"):
        read_checkpoint(tmp_path)
    # A plain pickle (pickle.dump, not torch.save): torch's unpickler warns about its protocol before refusing it;
    # the user sees celltune's one line only.
    with (tmp_path / "plain.pt").open("wb") as f:
        pickle.dump({"model": Payload()}, f)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match=r"plain\.pt: not a celltune checkpoint: it holds pickled Python"):
            read_checkpoint(tmp_path / "plain.pt")
    assert [str(w.message) for w in seen] == []
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(CheckpointError, match=r"torn\.pt: not a celltune checkpoint"):
        read_checkpoint(tmp_path / "torn.pt")
    model, _ = create_model("resnet18", num_classes=3, pretrained=False)
    save_checkpoint(tmp_path / "new.pt", model=model, card=_card())
    data = torch.load(tmp_path / "new.pt", weights_only=True)
    torch.save({**data, "format": "celltune-checkpoint/2"}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=r"new\.pt: written by a newer celltune \(celltune-checkpoint/2; this "
                                              r"one reads celltune-checkpoint/1\); upgrade"):
        load_checkpoint(tmp_path / "new.pt")
