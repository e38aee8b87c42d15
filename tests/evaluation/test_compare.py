import json

import pytest
import torch

from celltune.cli import main
from celltune.errors import ConfigError
from celltune.evaluation.compare import compare_runs
from celltune.models.checkpoint import ModelCard, read_checkpoint, save_checkpoint
from celltune.models.factory import create_model

from conftest import class_tree, random_checkpoint


@pytest.fixture()
def data(tmp_path):
    root = tmp_path / "d"
    for split, n in (("train", 2), ("val", 2), ("test", 12)):
        class_tree(root / split, {"a": n, "b": n, "c": n})
    return root


def _reordered(checkpoint, path, order):
    """The same model with its classes listed in another ``order``: the head's rows permuted to match."""
    saved = read_checkpoint(checkpoint)
    model, _ = create_model(saved["model_name"], num_classes=3, pretrained=False)
    model.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        model.fc.weight.copy_(model.fc.weight[order])
        model.fc.bias.copy_(model.fc.bias[order])
    card = ModelCard(**{k: saved[k] for k in ModelCard.__dataclass_fields__} | {
        "class_names": [saved["class_names"][i] for i in order]})
    save_checkpoint(path, model=model, card=card)
    return path


def test_a_model_against_itself_in_another_class_order_differs_nowhere(data, tmp_path):
    a = random_checkpoint(tmp_path / "a.pt", ["a", "b", "c"])
    b = _reordered(a, tmp_path / "b.pt", [2, 0, 1])
    c = compare_runs(a, b, data=data)
    assert c.images == 36 and (c.only_a, c.only_b, c.p_value) == (0, 0, 1.0)
    assert all(d == 0 for d in c.difference.values()) and c.a == c.b


def test_two_models_counts_and_cli(data, tmp_path, capsys):
    a = random_checkpoint(tmp_path / "a.pt", ["a", "b", "c"], seed=1)
    b = random_checkpoint(tmp_path / "b.pt", ["a", "b", "c"], seed=2)
    assert main(["-q", "evaluate", str(a), "--data", str(data), "--out-dir", str(tmp_path / "ea")]) == 0
    assert main(["-q", "evaluate", str(b), "--data", str(data), "--out-dir", str(tmp_path / "eb")]) == 0
    rows = [[r.split(",") for r in (tmp_path / e / "predictions_test.csv").read_text().splitlines()[1:]]
            for e in ("ea", "eb")]
    right = [[r[1] == r[2] for r in run] for run in rows]  # true == predicted
    only_a = sum(x and not y for x, y in zip(*right, strict=True))
    only_b = sum(y and not x for x, y in zip(*right, strict=True))
    capsys.readouterr()
    assert main(["-q", "compare", str(a), str(b), "--data", str(data), "--json", str(tmp_path / "new" / "c.json")]) == 0
    out = capsys.readouterr().out
    c = json.loads((tmp_path / "new" / "c.json").read_text())  # its folder made, not a traceback after the work
    assert (c["only_a"], c["only_b"]) == (only_a, only_b) and only_a + only_b > 0
    assert c["difference"]["accuracy"] == pytest.approx((sum(right[0]) - sum(right[1])) / 36)
    low, high = c["interval"]["accuracy"]
    assert low <= c["difference"]["accuracy"] <= high
    assert f"{only_a} images only A gets right, {only_b} only B" in out and "mean class accuracy (ACA)" in out
    # class_tree gives test/a/0.png the pixels of train/a/0.png (and 1.png likewise, in each class): 6 seen images.
    seen = [r[0].endswith(("/0.png", "/1.png")) for r in rows[0]]
    kept = [(x, y) for x, y, s in zip(*right, seen, strict=True) if not s]
    clean = c["without_twins"]
    assert (clean["left_out"], clean["images"]) == (6, 30) == (sum(seen), len(kept))
    assert clean["difference"]["accuracy"] == pytest.approx((sum(x for x, _ in kept) - sum(y for _, y in kept)) / 30)
    assert "without the 6 image(s) whose exact copy is in training (30 left):" in out
    evaluated = json.loads((tmp_path / "ea" / "metrics_test.json").read_text())["without_twins"]
    assert evaluated["accuracy"] == pytest.approx(sum(x for x, _ in kept) / 30)


def test_runs_that_split_the_data_differently_are_not_compared(tmp_path):
    tree = class_tree(tmp_path / "tree", {"a": 10, "b": 10, "c": 10})
    a = random_checkpoint(tmp_path / "a.pt", ["a", "b", "c"])
    b = random_checkpoint(tmp_path / "b.pt", ["a", "b", "c"])
    for path, seed in ((a, 0), (b, 1)):
        saved = read_checkpoint(path)
        torch.save({**saved, "split_seed": seed, "val_fraction": 0.15, "test_fraction": 0.15}, path)
    with pytest.raises(ConfigError, match=r"split .* differently"):
        compare_runs(a, b, data=tree)
