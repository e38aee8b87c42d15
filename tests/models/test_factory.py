import pytest
import torch
from torch import nn

from celltune.errors import ModelNotFoundError
from celltune.models.factory import available_models, create_model, early_layers, head_name, resolve_name


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


def test_freeze_stride_4_freezes_resnet18_stem_and_first_stage():
    # By hand, at 224 px: conv1 and bn1 give 112 (1/2); the max-pool and layer1 work at 56 (1/4); layer2 at 28 (1/8).
    model, _ = create_model("resnet18", num_classes=3, pretrained=False, freeze_stride=4)
    frozen = {n.rpartition(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    layer1 = {f"layer1.{block}.{layer}" for block in (0, 1) for layer in ("conv1", "bn1", "conv2", "bn2")}
    assert frozen == {"conv1", "bn1"} | layer1
    assert early_layers(model, stride=2) == ["conv1", "bn1"]
    assert early_layers(model, stride=1) == []  # conv1 already works at 1/2


def test_a_stem_rounded_by_its_padding_counts_at_its_stride():
    # AlexNet's stem: (224 + 2 * 2 - 11) // 4 + 1 = 55 px, not 56, and still the 1/4 layer.
    model, _ = create_model("alexnet", num_classes=3, pretrained=False)
    assert early_layers(model, stride=4) == ["features.0"]
    assert early_layers(model, stride=2) == []


class _RegisteredOutOfOrder(nn.Module):
    """The head is registered first and the stem last: only running the model tells which layer comes first."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.deep = nn.Conv2d(8, 8, 3, stride=2, padding=1)  # 16 -> 8 px: 1/4 of 32
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 32 -> 16 px: 1/2

    def forward(self, x):
        return self.head(self.deep(self.stem(x)).mean((2, 3)))


def test_early_layers_come_in_the_order_the_model_runs_them():
    model = _RegisteredOutOfOrder().train()
    assert early_layers(model, stride=2, input_size=32) == ["stem"]
    # The head's (N, 2) output is no feature map: it ends the early layers whatever the stride.
    assert early_layers(model, stride=64, input_size=32) == ["stem", "deep"]
    assert model.training  # the tracing pass (in eval mode) leaves the mode as it found it


def test_frozen_early_layers_keep_their_weights_and_follow_the_new_batch_statistics():
    torch.manual_seed(0)
    model, _ = create_model("resnet18", num_classes=3, pretrained=False, freeze_stride=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64) + 2.0), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    after = model.state_dict()
    assert model.conv1.weight.grad is None and model.layer1[1].conv2.weight.grad is None  # no backward through them
    for name in ("conv1.weight", "bn1.weight", "bn1.bias", "layer1.1.conv2.weight"):
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    for name in ("layer2.0.conv1.weight", "fc.weight"):
        assert not torch.equal(after[name], before[name]), name


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
