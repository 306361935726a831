"""CpuDropout: the same Bernoulli dropout as torch's, drawn from 16 bits per element."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nlp_transfer.speed.dropout import CpuDropout, use_cpu_dropout

KEEP = round(0.9 * 65536)  # p = 0.1


def _dropped(shape=(1000, 1000), p=0.1, seed=0) -> torch.Tensor:
    torch.manual_seed(seed)
    return CpuDropout(p).train()(torch.ones(shape))


def test_keeps_each_element_with_probability_one_minus_p_and_scales_exactly():
    out = _dropped()
    kept = out != 0
    n = out.numel()
    rate = KEEP / 65536
    assert abs(kept.float().mean().item() - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    assert torch.all(out[kept] == 65536 / KEEP)  # the inverse of the keep probability, so E[out] = input
    assert abs(out.mean().item() - 1.0) < 0.002


def test_neighbouring_elements_are_independent():
    # Four elements share one 64-bit draw: their masks must still be independent.
    kept = (_dropped(shape=(4_000_000,)) != 0).float().view(-1, 4)
    rate = KEEP / 65536
    for a, b in ((0, 1), (1, 2), (2, 3), (0, 3)):
        both = (kept[:, a] * kept[:, b]).mean().item()
        assert abs(both - rate * rate) < 5 * math.sqrt(rate * rate * (1 - rate * rate) / kept.shape[0])


def test_backward_reuses_the_forward_mask():
    torch.manual_seed(3)
    x = torch.randn(64, 48, requires_grad=True)
    out = CpuDropout(0.25).train()(x)
    out.backward(torch.ones_like(out))
    keep = round(0.75 * 65536)
    assert torch.equal(x.grad, (out != 0).float() * (65536 / keep))


def test_seeded_like_torch_dropout():
    assert torch.equal(_dropped(seed=5), _dropped(seed=5))
    assert not torch.equal(_dropped(seed=5), _dropped(seed=6))


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_eval_mode_and_zero_rate_pass_input_through(p):
    x = torch.randn(8, 8)
    assert torch.equal(CpuDropout(p).eval()(x), x)
    assert torch.equal(CpuDropout(0.0).train()(x), x)


def test_rates_16_bits_cannot_represent_fall_back_to_torch():
    torch.manual_seed(0)
    out = CpuDropout(1 - 1e-7).train()(torch.ones(10_000))
    assert torch.count_nonzero(out) < 5  # torch's own kernel at p ≈ 1, not a keep threshold rounded to 0 or 1


def test_use_cpu_dropout_swaps_every_dropout_module_and_leaves_weights_alone(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rates = [m.p for m in model.modules() if type(m) is nn.Dropout]
    assert use_cpu_dropout(model) == len(rates) > 0
    assert [m.p for m in model.modules() if isinstance(m, CpuDropout)] == rates
    assert not any(type(m) is nn.Dropout for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model.eval()
    ids = torch.tensor([[101, 2000, 2001, 102]])
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_training_with_either_dropout_reaches_the_same_accuracy(tiny_config, tmp_path):
    from nlp_transfer import train

    fast = train(tiny_config(output_dir=str(tmp_path / "fast")))
    torch_dropout = train(tiny_config(output_dir=str(tmp_path / "torch"), fast_cpu_dropout=False))
    assert fast.metrics["test"]["accuracy"] >= 0.85
    assert abs(fast.metrics["test"]["accuracy"] - torch_dropout.metrics["test"]["accuracy"]) <= 0.05
