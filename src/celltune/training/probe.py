"""The time budget's probe: this machine's training and inference speed, measured on a copy of the model with random
images, and the plan made from it (``celltune.training.budget``'s arithmetic)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from celltune.training.budget import GROWN_EPOCHS, Plan, Speed, Workload, larger_sizes, plan_run, smaller_sizes


def measure_speed(model: nn.Module, *, image_size: int, batch_size: int, in_chans: int, device: str = "cpu",
                  channels_last: bool = False, autocast: torch.dtype | None = None, steps: int = 4,
                  warmup: int = 2) -> Speed:
    """Time ``steps`` training steps (AdamW) and inference batches of random images on a copy of ``model``, after
    ``warmup`` untimed ones. The run's model and random state are left as they were."""
    probe = copy.deepcopy(model).to(device)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    probe.to(memory_format=memory)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, in_chans, image_size, image_size, generator=generator).to(device,
                                                                                              memory_format=memory)
    optimizer = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], lr=0.0)

    def timed(step, batches: int) -> float:
        with torch.autocast(device, dtype=autocast or torch.float32, enabled=autocast is not None):
            for _ in range(warmup):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(batches):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
        return time.perf_counter() - start

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        probe(images).float().logsumexp(1).mean().backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.inference_mode():
            probe(images)

    with torch.random.fork_rng(devices=[]):  # dropout's draws leave the run's random state alone
        probe.train()
        train = timed(train_step, steps)
        probe.eval()
        evaluate = timed(eval_step, steps)
    return Speed(image_size, batch_size * steps / train, batch_size * steps / evaluate, batch_size=batch_size)


AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def probe_and_plan(model: nn.Module, *, budget: float, started: float, work: Workload, batch_size: int,
                   image_size: int, size_fixed: bool, native_size: int, in_chans: int, accelerator: str,
                   precision: str, channels_last: bool, max_epochs: int | None,
                   batch_at: Callable[[int], int] | None = None) -> Plan:
    """Measure the model at ``image_size`` (and again at a smaller or larger size should the plan move to one, whose
    speed it first estimates from the pixels), then plan. ``started``: ``time.monotonic()`` when the run began;
    ``native_size``: the weights' own input size, which growing the image never passes; ``batch_at``: the batch the
    device holds at a size, for a plan that grows the image (None: ``batch_size`` at every size, as a user's)."""
    device = "cuda" if accelerator in ("gpu", "cuda") else "cpu"

    def measured(size: int, batch: int) -> Speed:
        return measure_speed(model, image_size=size, batch_size=batch, in_chans=in_chans, device=device,
                             channels_last=channels_last, autocast=AUTOCAST.get(precision))

    first = measured(image_size, batch_size)
    speeds = [first] + ([] if size_fixed else [first.scaled(s) for s in smaller_sizes(image_size)])
    larger = [] if size_fixed else [first.scaled(s) for s in larger_sizes(image_size, largest=native_size)]
    plan = plan_run(budget=budget, spent=time.monotonic() - started, speeds=speeds, work=work, batch_size=batch_size,
                    size_fixed=size_fixed, max_epochs=max_epochs, larger=larger)
    smaller = batch_at(plan.image_size) if plan.image_size > image_size and batch_at is not None else batch_size
    if smaller < batch_size:  # larger images: the batch the device's memory holds at their size
        plan = replace(plan, batch_size=smaller, reason=f"{plan.reason}, batch {smaller} at {plan.image_size} px")
    if plan.image_size != image_size:
        chosen = measured(plan.image_size, plan.batch_size)
        plan = replan(plan, started=started, speed=chosen, work=work, max_epochs=max_epochs)
    if smaller < batch_size and plan.epochs < GROWN_EPOCHS:  # the growth was judged at the larger batch's speed
        kept = plan_run(budget=budget, spent=time.monotonic() - started, speeds=[first], work=work,
                        batch_size=batch_size, size_fixed=True, max_epochs=max_epochs)
        plan = replace(kept, reason=f"{kept.reason}; not grown: {plan.epochs} epochs fit at {plan.image_size} px "
                                    f"with batch {smaller}", probe=[*plan.probe])
    return plan


def replan(plan: Plan, *, started: float, speed: Speed, work: Workload, max_epochs: int | None) -> Plan:
    """``plan`` again at its image size with what has been spent since ``started`` (the image cache built, a size
    measured), keeping its reason and adding ``speed`` to its probe."""
    again = plan_run(budget=plan.budget_seconds, spent=time.monotonic() - started, speeds=[speed], work=work,
                     batch_size=plan.batch_size, size_fixed=True, max_epochs=max_epochs)
    probe = plan.probe if speed in plan.probe else [*plan.probe, speed]
    return replace(again, reason=plan.reason, probe=probe)
