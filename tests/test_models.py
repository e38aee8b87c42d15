import pytest
import torch
from torch import nn

from celltune.errors import ModelNotFoundError
from celltune.models import available_models, create_model, head_name, resolve_name


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
    with pytest.raises(ModelNotFoundError, match=r"Did you mean: .*resnet18"):
        create_model("resnet81", num_classes=2, pretrained=False)
    with pytest.raises(ModelNotFoundError, match="celltune models"):
        resolve_name("zzzzzz")


def test_names_resolve_in_both_libraries():
    assert resolve_name("resnet18") == ("torchvision", "resnet18")  # torchvision first
    assert resolve_name("torchvision:resnet18") == ("torchvision", "resnet18")
    assert resolve_name("convnext_tiny") == ("torchvision", "convnext_tiny")
    assert resolve_name("coat_lite_mini") == ("timm", "coat_lite_mini")
    names = available_models()
    assert {"alexnet", "vgg16", "densenet121", "mobilenet_v2", "tf_efficientnet_lite0"} <= set(names)
    assert names == sorted(set(names))


def test_library_prefix_picks_timm_over_torchvision():
    model, _ = create_model("timm:resnet18", num_classes=2, pretrained=False)
    assert type(model).__module__.startswith("timm")
    model, _ = create_model("resnet18", num_classes=2, pretrained=False)
    assert type(model).__module__.startswith("torchvision")


def test_freeze_backbone_trains_only_the_head():
    model, _ = create_model("resnet18", num_classes=4, pretrained=False, freeze=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize(("name", "stem"), [("resnet18", "conv1"), ("timm:resnet18", "conv1"),
                                            ("tf_efficientnet_lite0", "conv_stem"), ("alexnet", "features.0")])
@pytest.mark.parametrize("in_chans", [1, 4])  # fewer than three channels, and more
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
