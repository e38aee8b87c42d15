import json

import pytest
import torch

from celltune.cli import main
from celltune.errors import ConfigError, DataError
from celltune.evaluation.compare import compare_cv, compare_runs
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


def _cv_dir(path, predicted, *, folds=(1, 1, 1, 2, 2, 2), true="a a b b c c", root="/d", stem="x",
            classes="abc", multilabel=False, finished=True, repeat=None):
    """A cv's files as celltune cv writes them: images x0..x5 under ``root`` with labels ``true`` held out in
    ``folds``; labels and ``predicted`` one word an image, or a list (multi-label: "a b"); ``repeat``: a second
    repeat's predictions too (folds 3 and 4)."""
    def words(v):
        return v.split() if isinstance(v, str) else v

    path.mkdir()
    (path / "cv_plan.json").write_text("{}")
    (path / "config.yaml").write_text(f"data:\n  root: {root}\n")
    if finished:
        (path / "cv.json").write_text(json.dumps({"folds": 2, "per_class_metric": "f1" if multilabel else "recall",
                                                  "per_class": {c: {} for c in classes}}))
    rows = []
    for shift, answers in ((0, predicted), (2, repeat)):
        if answers is not None:
            rows += [f"{fold + shift},{root}/{stem}{i}.png,{label},{answer},0.9" for i, (fold, label, answer) in
                     enumerate(zip(folds, words(true), words(answers), strict=True))]
    (path / "oof_predictions.csv").write_text("fold,path,true,predicted,confidence\n" + "\n".join(rows) + "\n")
    return path


def test_two_cv_runs_compare_on_their_out_of_fold_predictions(tmp_path, capsys):
    a = _cv_dir(tmp_path / "a", "a a b b c a")  # x5 wrong
    # x1 and x3 wrong; the data named another way, classes listed in another order, a second repeat all wrong
    b = _cv_dir(tmp_path / "b", "a b b a c c", root="data/../d", classes="cab", repeat="c c c c a a")
    c = compare_cv(a, b)
    assert (c.images, c.only_a, c.only_b, c.split) == (6, 2, 1, "out of fold")
    assert c.a["accuracy"] == pytest.approx(5 / 6) and c.difference["accuracy"] == pytest.approx(1 / 6)
    # A: a P 2/3 R 1 F1 0.8; b 1.0; c P 1 R 1/2 F1 2/3. B: a P 1/2 R 1/2; b P 1/2 R 1/2; c 1.0.
    assert c.f1_per_class == {k: pytest.approx(v) for k, v in {"a": [0.8, 0.5], "b": [1.0, 0.5],
                                                                "c": [2 / 3, 1.0]}.items()}
    assert c.difference["macro_f1"] == pytest.approx((0.8 + 1 + 2 / 3) / 3 - 2 / 3)
    assert main(["-q", "compare", str(a), str(b)]) == 0  # no --data: the folds hold their images
    out = capsys.readouterr().out
    assert "out-of-fold predictions as the folds scored them, 6 images" in out
    assert "2 images only A gets right, 1 only B" in out and "F1 per class" in out


def test_multi_label_cv_runs_compare_label_by_label(tmp_path):
    true = ["a", "a b", "b", "c", "b c", "a"]
    a = _cv_dir(tmp_path / "a", true, true=true, multilabel=True)  # every label right
    b = _cv_dir(tmp_path / "b", ["a", "a", "b", "c", "b", "a"], true=true, multilabel=True)  # x1, x4 miss one
    c = compare_cv(a, b)
    assert (c.images, c.only_a, c.only_b) == (6, 2, 0) and c.a["exact_match"] == 1.0
    assert c.difference["exact_match"] == pytest.approx(2 / 6)
    # B: a 3 of 3 found, F1 1; b 2 of 3 found, precision 1, F1 0.8; c 1 of 2 found, F1 2/3
    assert c.f1_per_class == {k: pytest.approx(v) for k, v in {"a": [1, 1], "b": [1, 0.8], "c": [1, 2 / 3]}.items()}


def test_cv_runs_over_other_folds_or_unfinished_are_not_compared(tmp_path, capsys):
    a = _cv_dir(tmp_path / "a", "a a b b c c")
    with pytest.raises(ConfigError, match="held out 2 image"):
        compare_cv(a, _cv_dir(tmp_path / "b", "a a b b c c", folds=(1, 2, 1, 2, 1, 2)))
    with pytest.raises(DataError, match=r"1 image.* have other labels"):
        compare_cv(a, _cv_dir(tmp_path / "l", "a a b b c c", true="a a b b c b"))
    with pytest.raises(ConfigError, match="did not score the same images"):
        compare_cv(a, _cv_dir(tmp_path / "o", "a a b b c c", stem="y"))
    with pytest.raises(ConfigError, match=r"celltune cv --resume .*celltune cv --collect"):
        compare_cv(a, _cv_dir(tmp_path / "c", "a a b b c c", finished=False))
    run = random_checkpoint(tmp_path / "r.pt", ["a", "b", "c"])
    assert main(["-q", "compare", str(a), str(run)]) == 2
    assert "not one of each" in capsys.readouterr().err
    assert main(["-q", "compare", str(run), str(run)]) == 2
    assert "--data: the data folder" in capsys.readouterr().err
    assert main(["-q", "compare", str(a), str(a), "--data", str(tmp_path)]) == 2
    assert "leave both out" in capsys.readouterr().err
