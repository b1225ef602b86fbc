"""MIL / CRF / Dice losses, schedule and EMA with hand-computed values."""

import copy

import pytest
import torch
import torch.nn.functional as F

from mal.labeler.losses import DICE_EPS, crf_loss, crf_refine, dice_loss, mil_loss, neighbour_affinity, ramp
from mal.labeler.schedule import EMATeacher, lr_at, param_groups


def _box(m=16, r0=4, r1=12, c0=3, c1=10):
    b = torch.zeros(1, 1, m, m)
    b[..., r0:r1, c0:c1] = 1
    return b


def test_dice_edge_cases():
    t = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert dice_loss(t, t).item() == pytest.approx(DICE_EPS / (4 + DICE_EPS), abs=1e-7)  # identical -> ~0
    assert dice_loss(torch.zeros(1, 4), t).item() == pytest.approx(1.0)  # empty prediction
    assert dice_loss(torch.zeros(1, 4), torch.zeros(1, 4)).item() == pytest.approx(
        1.0
    )  # both empty: 1 - 0/eps
    x = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert dice_loss(x, y).item() == pytest.approx(1 - 2 * 0.5 / (0.5 + 1 + DICE_EPS), abs=1e-6)
    assert dice_loss(torch.ones(3, 1, 2, 2), torch.ones(3, 1, 2, 2)).shape == (3,)


def test_mil_is_zero_for_a_box_tight_mask():
    box = _box()
    assert mil_loss(box.clone(), box).item() == pytest.approx(0.0, abs=1e-5)
    # any mask touching every box row/column and nothing outside is also optimal (a diagonal)
    diag = torch.zeros_like(box)
    for k in range(8):
        diag[0, 0, 4 + k, 3 + min(k, 6)] = 1
    assert mil_loss(diag, box).item() == pytest.approx(0.0, abs=1e-5)


def test_mil_hand_value_for_the_whole_crop():
    box = _box()  # 8 box rows of 16, 7 box columns of 16
    full = torch.ones_like(box)
    rows = 1 - 2 * 8 / (16 + 8 + DICE_EPS)
    cols = 1 - 2 * 7 / (16 + 7 + DICE_EPS)
    assert mil_loss(full, box).item() == pytest.approx(rows + cols, abs=1e-6)


def test_affinity_hand_values():
    img = torch.zeros(1, 3, 2, 2)
    img[0, :, 0, 1] = 0.1  # one pixel differs by 0.1 in each channel
    k = neighbour_affinity(img, sigma=0.1)
    assert k.shape == (1, 9, 2, 2)
    assert k[0, 4].eq(1).all()  # centre
    assert k[0, 5, 0, 0].item() == pytest.approx(torch.exp(torch.tensor(-0.03 / 0.02)).item(), rel=1e-5)
    assert k[0, 0, 0, 0].item() == 0  # neighbour outside the image


def test_crf_refinement_settles_on_the_colour_region():
    m = 32
    img = torch.zeros(1, 3, m, m)
    img[..., 8:20, 8:24] = 1.0  # the object: a bright rectangle inside a looser box
    box = _box(m, 4, 24, 4, 28)
    out = crf_refine(torch.full((1, 1, m, m), 0.5), img, box, iterations=100)
    hard = out >= 0.5
    target = torch.zeros_like(hard)
    target[..., 8:20, 8:24] = True
    assert torch.equal(hard, target)
    assert out.min() >= 0.1 - 1e-6 and out.max() <= 0.9 + 1e-6
    assert out[box == 0] == pytest.approx(0.1)


def test_crf_loss_gradient_only_through_the_student_probability():
    m = 16
    img = torch.rand(2, 3, m, m)
    box = _box(m).expand(2, 1, m, m)
    s_logit = torch.randn(2, 1, m, m, requires_grad=True)
    t_logit = torch.randn(2, 1, m, m, requires_grad=True)
    loss, target = crf_loss(torch.sigmoid(s_logit), torch.sigmoid(t_logit), img, box, iterations=5)
    assert loss.shape == (2,) and not target.requires_grad
    loss.sum().backward()
    assert s_logit.grad is not None and s_logit.grad.abs().sum() > 0
    assert t_logit.grad is None


def test_ramp_and_lr_schedule():
    assert [ramp(s, 4) for s in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    assert ramp(0, 0) == 1.0
    lrs = [lr_at(s, 1.0, total_steps=100, warmup_steps=10, min_ratio=0.2) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.2, abs=1e-3) and min(lrs[10:]) >= 0.2 - 1e-9
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))  # monotone cosine decay
    with pytest.raises(ValueError):
        lr_at(0, 1.0, 0, 0)


def test_ema_hand_value_and_no_grad():
    student = torch.nn.Linear(1, 1, bias=False)
    teacher = copy.deepcopy(student)
    ema = EMATeacher(teacher, momentum=0.9)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
    ema.update(student)
    assert teacher.weight.item() == pytest.approx(0.9 * 1 + 0.1 * 3)
    assert not teacher.weight.requires_grad and not teacher.training
    with pytest.raises(ValueError):
        EMATeacher(teacher, 1.5)


def test_param_groups_skip_decay_on_vectors():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    decay, no_decay = param_groups(model, 0.1)
    assert len(decay["params"]) == 1 and len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0


def _crf_reference(prob, image, box, iterations, sigma, lo=0.1, hi=0.9):
    """The paper's CRF update (docs/labeler.md, Losses) written out: two label channels, 3x3 neighbours, renormalise."""
    b, _, h, w = prob.shape
    img = F.pad(image, (1, 1, 1, 1), mode="replicate")
    inside = F.pad(torch.ones(1, 1, h, w), (1, 1, 1, 1))
    belief = (prob * box).clamp(lo, hi)
    for _ in range(iterations):
        logs = F.pad(torch.cat([belief.log(), (1 - belief).log()], 1), (1, 1, 1, 1))
        acc = torch.zeros(b, 2, h, w)
        for dy in range(3):
            for dx in range(3):
                d2 = ((image - img[:, :, dy : dy + h, dx : dx + w]) ** 2).sum(1, keepdim=True)
                k = torch.exp(-d2 / (2 * sigma**2)) * inside[:, :, dy : dy + h, dx : dx + w]
                acc += k * logs[:, :, dy : dy + h, dx : dx + w]
        fg, bg = acc[:, :1].exp() * box, acc[:, 1:].exp()
        belief = (fg / (fg + bg)).clamp(lo, hi)
    return belief


def test_crf_refinement_matches_the_two_label_formula():
    torch.manual_seed(0)
    m = 12
    image = torch.rand(2, 3, m, m) * 0.3
    prob = torch.rand(2, 1, m, m)
    box = _box(m, 2, 10, 3, 9).expand(2, 1, m, m)
    ours = crf_refine(prob, image, box, iterations=7, sigma=0.1)
    ref = _crf_reference(prob, image, box, iterations=7, sigma=0.1)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_normalized_affinity_lets_background_into_a_confident_box():
    """From a confident box (0.9), the paper's sum of weighted logits keeps every straight box edge (a pixel
    there has 6 foreground terms against 3); the mean variant lets the outside background diffuse in through
    the like-coloured margin and stops at the colour edge."""
    m = 32
    img = torch.zeros(1, 3, m, m)
    img[..., 8:20, 8:24] = 1.0
    box = _box(m, 4, 24, 4, 28)
    start = torch.full((1, 1, m, m), 0.9)
    paper = crf_refine(start, img, box, iterations=100) >= 0.5
    mean = crf_refine(start, img, box, iterations=100, normalize_affinity=True) >= 0.5
    target = torch.zeros_like(mean)
    target[..., 8:20, 8:24] = True
    assert torch.equal(mean, target)
    assert paper[0, 0, 4:24, 16].all() and paper[0, 0, 14, 4:28].all()  # the box's mid-lines stay foreground
    assert not torch.equal(paper, target)
