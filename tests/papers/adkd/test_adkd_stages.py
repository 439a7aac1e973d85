"""Stage pieces: the precomputed teacher targets give the online loss, the anneal schedule per epoch, the
PKD layer map, the release table, the GLUE metrics."""

import pytest
import torch

from papers.adkd.adkd import multi_view_attribution_loss, soft_cross_entropy_kd, total_loss, view_targets
from papers.adkd.config import ModelConfig, StudentConfig, get_config, task_settings
from papers.adkd.data import collate, signal_sum_examples
from papers.adkd.models import cross_entropy
from papers.adkd.stages import (
    build_model,
    evaluate,
    main_metric,
    pkd_layers,
    student_loss_fn,
    teacher_targets,
)


def toy_pair():
    torch.manual_seed(0)
    teacher = build_model(ModelConfig("toy", num_layers=2, d_model=16, n_heads=2), 2).double().eval()
    teacher.requires_grad_(False)
    torch.manual_seed(1)
    student = build_model(ModelConfig("toy", num_layers=1, d_model=16, n_heads=2), 2).double()
    return teacher, student


@pytest.mark.parametrize("method", ["AD-KD", "PKD"])
def test_precomputed_teacher_targets_give_the_online_loss(method):
    teacher, student = toy_pair()
    examples = signal_sum_examples(8, seed=0)
    cfg = StudentConfig(net=ModelConfig("toy"), alpha=0.9, temperature=2.0, beta=10.0, pkd_beta=3.0)
    pairs = pkd_layers(2, 2) if method == "PKD" else []
    cached = teacher_targets(teacher, examples, 0, cfg, 2, [1])
    batch = collate(0)(cached)
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    loss, _ = student_loss_fn(cfg, method, 2, steps_per_epoch=1, start_step=0)(student, batch)

    plain = collate(0)(examples)
    t_e = teacher.embed(plain)
    t_logits, t_cls = teacher.head(t_e, plain, return_cls=True)
    s_e = student.embed(plain)
    s_logits, s_cls = student.head(s_e, plain, return_cls=True)
    ce, kd = cross_entropy(s_logits, plain["labels"]), soft_cross_entropy_kd(s_logits, t_logits, 2.0)
    if method == "AD-KD":
        extra = 10.0 * multi_view_attribution_loss(
            lambda x: teacher.head(x, plain),
            t_e,
            lambda x: student.head(x, plain),
            s_e,
            view_targets(plain["labels"], 2),
        )
    else:
        assert pairs == [(1, 1)]
        a, b = (
            torch.nn.functional.normalize(s_cls[0], dim=-1),
            torch.nn.functional.normalize(t_cls[0], dim=-1),
        )
        extra = 3.0 * ((a - b) ** 2).sum(-1).mean()
    expected = total_loss(ce, kd, 0.0, 0.9, 0.0) + extra
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_anneal_moves_tau_per_epoch_and_resumes_mid_run():
    teacher, student = toy_pair()
    cfg = StudentConfig(net=ModelConfig("toy"), temperature=4.0, anneal=True, epochs=3)
    batch = collate(0)(teacher_targets(teacher, signal_sum_examples(4, 0), 0, cfg, 2, []))
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    fn = student_loss_fn(cfg, "KD", 2, steps_per_epoch=2, start_step=0)
    assert [fn(student, batch)[1]["tau"] for _ in range(6)] == [4.0, 4.0, 2.5, 2.5, 1.0, 1.0]
    resumed = student_loss_fn(cfg, "KD", 2, steps_per_epoch=2, start_step=3)
    assert [resumed(student, batch)[1]["tau"] for _ in range(3)] == [2.5, 1.0, 1.0]


def test_pkd_skip_layer_map():
    assert pkd_layers(3, 6) == [(1, 2), (2, 4)]
    assert pkd_layers(6, 12) == [(j, 2 * j) for j in range(1, 6)]
    assert pkd_layers(1, 2) == []


def test_release_table_is_applied_per_task():
    exp = get_config("small").glue
    teacher, student = task_settings(exp, "mrpc")
    assert (teacher.batch_size, teacher.epochs, teacher.lr) == (8, 5, 5e-5)
    assert (student.alpha, student.temperature, student.beta, student.top_k, student.anneal) == (
        0.9,
        4.0,
        10.0,
        None,
        True,
    )
    _, qqp = task_settings(exp, "qqp")
    assert qqp.alpha == 1.0 and qqp.top_k == 734
    toy = get_config("toy").glue
    assert task_settings(toy, "sst2") == (toy.teacher, toy.student)
    with pytest.raises(ValueError, match="unknown scale"):
        get_config("huge")


class Fixed(torch.nn.Module):
    def __init__(self, preds):
        super().__init__()
        self.preds = preds

    def forward(self, batch):
        return torch.nn.functional.one_hot(self.preds[batch["input_ids"][:, 1]], 2).float()


def test_glue_metrics_by_hand():
    # example i carries token i + 2 at position 1: the model predicts preds[i + 2]
    labels = [1, 1, 0, 0, 1, 0]
    preds = torch.tensor([0, 0, 1, 0, 0, 1, 1, 0])  # predictions 1, 0, 0, 1, 1, 0 for examples 0..5
    examples = [{"input_ids": [1, i + 2], "label": y} for i, y in enumerate(labels)]
    model = Fixed(preds)
    scores = evaluate(model, examples, 0, "mrpc")
    tp, fp, fn = 2, 1, 1
    assert scores["accuracy"] == pytest.approx(100 * 4 / 6)
    assert scores["f1"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn))
    assert main_metric(scores) == scores["f1"]
    mcc = evaluate(model, examples, 0, "cola")["mcc"]
    tn = 2
    assert mcc == pytest.approx(
        100 * (tp * tn - fp * fn) / ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    )
