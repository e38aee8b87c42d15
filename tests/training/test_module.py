import itertools
from typing import get_args, get_type_hints

import pytest
import torch

from celltune.config import Augment, OptimConfig
from celltune.models.checkpoint import ModelCard
from celltune.training.module import OPTIMIZERS, CellClassifier, FocalLoss, WarmupCosine, warmup_cosine


def _card(n: int = 6, **kw) -> ModelCard:
    return ModelCard(model_name="mobilenet_v2", class_names=[str(i) for i in range(n)], mean=[0.5] * 3,
                     std=[0.25] * 3, image_size=6, **kw)


def test_warmup_cosine_schedule_shape():
    lrs = [warmup_cosine(s, warmup_steps=4, total_steps=20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    assert lrs[-1] < 0.05
    # Halfway through the decay the multiplier is cos(pi / 2) mapped to 0.5.
    assert warmup_cosine(12, warmup_steps=4, total_steps=20) == pytest.approx(0.5)


def test_every_optimizer_the_config_offers_is_built():
    assert set(OPTIMIZERS) == set(get_args(get_type_hints(OptimConfig)["optimizer"]))
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = OPTIMIZERS["sgd"](params, OptimConfig(lr=0.1, momentum=0.8, weight_decay=0.01))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8 and sgd.defaults["lr"] == 0.1
    adamw = OPTIMIZERS["adamw"](params, OptimConfig(lr=0.2, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05


def test_loss_follows_the_card_and_the_options():
    weights = torch.tensor([0.5, 2.0])
    single = CellClassifier(torch.nn.Identity(), card=_card(2), optim=OptimConfig(label_smoothing=0.1),
                            loss_weights=weights)
    assert isinstance(single.criterion, torch.nn.CrossEntropyLoss)
    assert single.criterion.label_smoothing == 0.1 and torch.equal(single.criterion.weight, weights)
    multi = CellClassifier(torch.nn.Identity(), card=_card(2, multilabel=True), optim=OptimConfig())
    assert isinstance(multi.criterion, torch.nn.BCEWithLogitsLoss)
    focal = CellClassifier(torch.nn.Identity(), card=_card(2, multilabel=True), optim=OptimConfig(focal_gamma=2.0))
    assert isinstance(focal.criterion, FocalLoss) and focal.criterion.gamma == 2.0


def test_focal_loss_by_hand():
    # One logit 0 (p = 0.5) with target 1: BCE is log 2, focal weight (1 - 0.5)^2 = 0.25.
    loss = FocalLoss(gamma=2.0)(torch.zeros(1, 1), torch.ones(1, 1))
    assert float(loss) == pytest.approx(0.25 * torch.log(torch.tensor(2.0)).item())


class _Echo(torch.nn.Module):
    """Logits that are the (mixed) images' first pixel row: the test decides what the model predicts."""

    def forward(self, x):  # (B, C, H, W) -> (B, W)
        return x[:, 0, 0, :]


def test_mixup_training_accuracy_counts_the_larger_part_of_each_mix():
    module = CellClassifier(_Echo(), card=_card(), optim=OptimConfig(), augment=Augment(mixup=0.8))
    labels = torch.tensor([0, 1, 2, 3])
    # A fixed mix: 30% of each image's own class, 70% of the next one's; the model answers the larger part.
    soft = 0.3 * torch.nn.functional.one_hot(labels, 6) + 0.7 * torch.nn.functional.one_hot((labels + 1) % 6, 6)
    module.mixup = lambda images, targets: (soft.float()[:, None, None, :].expand(4, 3, 6, 6).contiguous(), soft)
    module.training_step([torch.zeros(4, 3, 6, 6), labels, torch.tensor([[0, p] for p in range(4)])], 0)
    _, correct, n = module._train_sums
    assert (correct, n) == (4, 4)


def test_a_relaid_schedule_continues_where_it_was_and_ends_at_zero():
    schedule = WarmupCosine(warmup_steps=4, total_steps=100)
    before = [schedule(s) for s in range(41)]
    schedule.relay(40, 60)  # the time budget cut the run to 60 steps at step 40
    after = [schedule(s) for s in range(40, 61)]
    assert [schedule(s) for s in range(41)] == before  # what ran stays as it was
    assert after[0] == pytest.approx(before[40]) and after[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(after))
    # Halfway from step 40 to 60 the multiplier is half of where it was: cos(pi / 2) mapped to 0.5.
    assert schedule(50) == pytest.approx(before[40] * 0.5)
    early = WarmupCosine(warmup_steps=10, total_steps=100)
    early.relay(5, 50)  # still warming up: the warm-up stays, the cosine after it ends at step 50
    assert early(9) == 1.0 and early(30) == pytest.approx(warmup_cosine(30, warmup_steps=10, total_steps=50))


def test_the_moving_average_starts_as_the_model_and_lags_behind_it():
    model = torch.nn.Linear(3, 2)
    module = CellClassifier(model, card=_card(2), optim=OptimConfig(), ema=0.9)
    assert module.ema is not None and module.ema.module is not model
    assert torch.equal(module.ema.module.weight, model.weight)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    module.ema.update(model, step=1000)  # past the warm-up: the decay is 0.9, so the average moves a tenth of the way
    assert torch.allclose(module.ema.module.weight, start + 0.1)
    assert "ema.module.weight" in module.state_dict()  # saved in last.ckpt, for --resume
    assert not any(p.requires_grad for p in module.ema.parameters())  # nothing trains it but the average


def _save_ema(rank, module, out):  # in a spawned process, as ddp_spawn sends the module to each rank
    torch.save({"weights": module.ema.state_dict(), "rounding": module.ema._sr_generator.get_state()}, out)


@pytest.mark.slow
def test_a_module_with_a_moving_average_reaches_a_spawned_process_whole(tmp_path):
    module = CellClassifier(torch.nn.Linear(3, 2), card=_card(2), optim=OptimConfig(), ema=0.999)
    module.ema._sr_generator.manual_seed(7)
    # torch.Generator itself does not survive the trip (the default --ema with --strategy ddp_spawn failed so)
    torch.multiprocessing.start_processes(_save_ema, args=(module, tmp_path / "sent.pt"), nprocs=1,
                                          start_method="spawn")
    sent = torch.load(tmp_path / "sent.pt")
    assert sent["weights"].keys() == module.ema.state_dict().keys()
    assert all(torch.equal(sent["weights"][k], v) for k, v in module.ema.state_dict().items())
    assert torch.equal(sent["rounding"], module.ema._sr_generator.get_state())
