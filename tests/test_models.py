import os
from pathlib import Path

import matplotlib.cbook
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from celltune.models import (
    DEFAULT_MODEL,
    ModelNotFoundError,
    WeightsUnavailableError,
    _fdet_mobilenet_v2,
    _lite0_file,
    create_model,
    head_name,
    load_weights_file,
)


@pytest.mark.parametrize(("name", "head", "in_features"), [
    ("alexnet", "classifier.6", 4096),
    ("resnet18", "fc", 512),
    ("densenet121", "classifier", 1024),
    ("mobilenet_v2", "classifier.1", 1280),
    ("test_efficientnet", "classifier", None),
])
def test_head_is_replaced_for_n_classes(name, head, in_features):
    model, prep = create_model(name, num_classes=5, pretrained=False)
    assert head_name(model) == head
    layer = model.get_submodule(head)
    assert layer.out_features == 5
    if in_features:
        assert layer.in_features == in_features
    assert len(prep.mean) == 3 and prep.input_size > 0
    model.eval()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


def test_vgg16_keeps_its_classifier_but_the_last_layer():
    model, _ = create_model("vgg16", num_classes=3, pretrained=False)
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [4096, 4096, 3]


def test_unknown_name_lists_close_matches():
    with pytest.raises(ModelNotFoundError, match="resnet18"):
        create_model("resnet81", num_classes=2, pretrained=False)


def test_library_prefix_picks_timm_over_torchvision():
    model, _ = create_model("timm:resnet18", num_classes=2, pretrained=False)
    assert type(model).__module__.startswith("timm")
    model, _ = create_model("resnet18", num_classes=2, pretrained=False)
    assert type(model).__module__.startswith("torchvision")


def test_freeze_backbone_trains_only_the_head():
    model, _ = create_model("resnet18", num_classes=4, pretrained=False, freeze=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]


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
        load_weights_file(model, tmp_path / "alex.pt")


def _imagenet_top5(model, prep) -> list[str]:
    """Top-5 ImageNet classes for Grace Hopper's portrait, shipped with matplotlib."""
    image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    tf = v2.Compose([v2.PILToTensor(), v2.Resize(256), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(prep.mean, prep.std)])
    with torch.no_grad():
        top = model.eval()(tf(image)[None])[0].topk(5).indices.tolist()
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    return [categories[i] for i in top]


@pytest.mark.parametrize(("name", "available"), [("mobilenet_v2", _fdet_mobilenet_v2),
                                                 ("tf_efficientnet_lite0", _lite0_file)])
def test_offline_imagenet_weights_are_genuine(name, available):
    if available() is None:
        pytest.skip(f"offline weights for {name} not installed")
    from celltune.models import _lite0_state_dict

    model, prep = create_model(name, num_classes=1000, pretrained=True)
    genuine = torch.load(available(), weights_only=True) if name == "mobilenet_v2" else _lite0_state_dict(model)
    own = model.state_dict()
    head = head_name(model) + "."
    assert all(torch.equal(own[k], v) for k, v in genuine.items() if not k.startswith(head))
    # The factory gave a fresh head; put the ImageNet one back to check the logits mean what ImageNet says.
    model.load_state_dict(genuine)
    assert "military uniform" in _imagenet_top5(model, prep)


def test_default_model_is_one_with_offline_weights():
    assert DEFAULT_MODEL in ("mobilenet_v2", "tf_efficientnet_lite0")


@pytest.mark.parametrize(("name", "stem"), [("resnet18", "conv1"), ("timm:resnet18", "conv1"),
                                            ("tf_efficientnet_lite0", "conv_stem"), ("alexnet", "features.0")])
@pytest.mark.parametrize("in_chans", [1, 2, 4, 5])
def test_stem_adapted_from_rgb_filters(name, stem, in_chans):
    torch.manual_seed(0)
    rgb_model, rgb_prep = create_model(name, num_classes=2, pretrained=False)
    torch.manual_seed(0)  # the same initial weights, standing in for pretrained ones
    model, prep = create_model(name, num_classes=2, in_chans=in_chans, pretrained=False)
    rgb = rgb_model.get_submodule(stem).weight.detach()
    w = model.get_submodule(stem).weight.detach()
    assert w.shape == (rgb.shape[0], in_chans, *rgb.shape[2:])
    scale = 3 / in_chans
    mean = rgb.mean(dim=1)
    if in_chans >= 3:
        assert torch.allclose(w[:, :3], rgb * scale)  # RGB filters kept, rescaled
    for c in range(3 if in_chans >= 3 else 0, in_chans):
        assert torch.allclose(w[:, c], mean * scale)  # extra channels: the mean RGB filter, rescaled
    # A grey image with every channel equal gets the same stem response as the RGB model gave it.
    x = torch.full((1, in_chans, 32, 32), 0.3)
    conv, rgb_conv = model.get_submodule(stem), rgb_model.get_submodule(stem)
    assert torch.allclose(conv(x), rgb_conv(torch.full((1, 3, 32, 32), 0.3)), atol=1e-5)
    assert len(prep.mean) == len(prep.std) == in_chans
    if in_chans >= 3:
        assert prep.mean[:3] == rgb_prep.mean
