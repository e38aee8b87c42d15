"""The package's architecture.py builds, for either library, the network celltune trains: its state dict loads
strictly (the package tests run through timm's small test model; torchvision's branch is checked here)."""

import pytest

from celltune.export.modelzoo_files import architecture_source, environment_yaml
from celltune.models import factory


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_a_torchvision_architecture_rebuilds_the_trained_network(name):
    library, _ = factory.resolve_name(name)
    assert library == "torchvision"
    namespace: dict = {}
    exec(compile(architecture_source(library), "architecture.py", "exec"), namespace)
    packaged = namespace["build_model"](name, num_classes=5, in_chans=4)
    trained, _ = factory.create_model(name, num_classes=5, in_chans=4, pretrained=False)
    packaged.load_state_dict(trained.state_dict())  # strict: every name and shape the same
    assert "torchvision=" in environment_yaml(library) and "timm==" not in environment_yaml(library)
