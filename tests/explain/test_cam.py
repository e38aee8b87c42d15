"""Class activation maps: the target layer of each family, and Grad-CAM's values against a hand computation."""

import numpy as np
import pytest
import torch
from torch import nn

from celltune.errors import ConfigError
from celltune.explain.cam import find_target_layer, heatmaps
from celltune.models.factory import create_model


@pytest.mark.parametrize(("name", "layer"), [
    ("resnet18", "layer4"),  # torchvision: the last residual stage
    ("mobilenet_v2", "features"),
    ("densenet121", "features"),
    ("vgg16", "features"),  # not the adaptive avgpool after it, which only resizes the map
    ("tf_efficientnet_lite0", "bn2"),  # timm: the head's convolution, batch-normed and activated
    ("convnext_atto", "norm_pre"),
])
def test_the_target_layer_is_the_last_convolutional_stage(name, layer):
    model, _ = create_model(name, num_classes=3, pretrained=False)
    assert find_target_layer(model.eval(), torch.randn(1, 3, 64, 64)) == layer


def test_a_transformer_or_an_unknown_layer_is_a_clear_error():
    vit, _ = create_model("vit_tiny_patch16_224", num_classes=3, pretrained=False)
    with pytest.raises(ConfigError, match=r"VisionTransformer ends in no \(B, C, H, W\) feature map.*--layer"):
        find_target_layer(vit.eval(), torch.randn(1, 3, 224, 224))
    resnet, _ = create_model("resnet18", num_classes=3, pretrained=False)
    with pytest.raises(ConfigError, match=r"--layer 'layer5': the model has no such layer; did you mean layer"):
        heatmaps(resnet, torch.randn(1, 3, 32, 32), [0], layer="layer5")
    with pytest.raises(ConfigError, match=r"unknown explanation method 'lime'; choose from gradcam, gradcam\+\+"):
        heatmaps(resnet, torch.randn(1, 3, 32, 32), [0], method="lime")


class Tiny(nn.Module):
    """conv (1x1, weight 1) -> ReLU -> global mean -> linear with weights +1 (class 0) and -1 (class 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_grad_cam_equals_the_hand_computed_map():
    # The activation A is the image itself; d logit_0 / dA = 1/16 at every pixel, so the channel weight is 1/16 and
    # the map ReLU(A / 16), scaled to 0..1 by its min and max: (x - 1) / 8 here. For class 1 the weight is -1/16: the
    # map is ReLU of a negative, zero everywhere.
    x = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 8, 7, 6], [5, 4, 3, 2]])[None, None]
    maps, layer = heatmaps(Tiny(), x, [0], layer="conv")
    assert layer == "conv"
    np.testing.assert_allclose(maps[0], (x[0, 0].numpy() - 1) / 8, atol=1e-6)
    maps, _ = heatmaps(Tiny(), x, [1], layer="conv")
    np.testing.assert_allclose(maps[0], np.zeros((4, 4)), atol=1e-6)
    frozen = Tiny().requires_grad_(False)  # a frozen backbone (--freeze): the gradient must still reach the layer
    maps, _ = heatmaps(frozen, x, [0], layer="conv")
    np.testing.assert_allclose(maps[0], (x[0, 0].numpy() - 1) / 8, atol=1e-6)
