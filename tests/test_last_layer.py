"""Training the last encoder layer at the first position only changes no logit and no gradient."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification
from transformers.models.bert.modeling_bert import BertLayer

from nlp_transfer.speed.last_layer import train_first_position_only, train_full_last_layer


def _config(attn: str = "sdpa", dropout: float = 0.0) -> BertConfig:
    config = BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        num_labels=3, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    config._attn_implementation = attn
    return config


def _batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 120, (5, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padded rows: the first position must still ignore the padding
    mask[3, 2:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1, 0])}


def _logits_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _last_layer_output_shape(model, batch) -> torch.Size:
    shapes = []
    hook = model.bert.encoder.layer[-1].register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    model(**batch)
    hook.remove()
    return shapes[0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logits_and_every_gradient_match_the_full_layer(attn):
    torch.manual_seed(0)
    model = BertForSequenceClassification(_config(attn)).train()
    batch = _batch()
    full_logits, full_grads = _logits_and_grads(model, batch)
    assert _last_layer_output_shape(model, batch) == (5, 11, 32)

    assert train_first_position_only(model)
    assert _last_layer_output_shape(model, batch) == (5, 1, 32)  # the other positions are not computed
    logits, grads = _logits_and_grads(model, batch)
    torch.testing.assert_close(logits, full_logits, rtol=1e-6, atol=1e-6)
    assert grads.keys() == full_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], full_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_evaluation_runs_the_full_layer_and_nothing_saved_changes(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(_config(dropout=0.1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_first_position_only(model)
    model.eval()
    batch = _batch()
    assert _last_layer_output_shape(model, batch) == (5, 11, 32)
    reference = BertForSequenceClassification(_config(dropout=0.1)).eval()
    reference.load_state_dict(before)
    assert torch.equal(model(**batch).logits, reference(**batch).logits)

    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert type(model.bert.encoder.layer[-1]).__name__ == "BertLayer"
    train_full_last_layer(model)
    assert type(model.bert.encoder.layer[-1]) is BertLayer


def test_dropout_in_the_pruned_layer_still_drops(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(_config(dropout=0.5)).train()
    train_first_position_only(model)
    batch = _batch()
    first, second = model(**batch).logits, model(**batch).logits
    assert not torch.equal(first, second)


def test_models_whose_head_reads_every_position_keep_the_full_layer():
    model = BertForTokenClassification(_config())
    assert not train_first_position_only(model)
    assert type(model.bert.encoder.layer[-1]) is BertLayer


def test_applies_under_a_lora_wrapper():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = BertForSequenceClassification(_config())
    model = peft.get_peft_model(base, peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    model.train()
    batch = _batch()
    full_logits, _ = _logits_and_grads(model, batch)
    assert train_first_position_only(model)
    logits, grads = _logits_and_grads(model, batch)
    torch.testing.assert_close(logits, full_logits, rtol=1e-6, atol=1e-6)
    assert any("lora" in name for name in grads)


def test_training_with_and_without_it_learns_the_same(tiny_model_dir_no_dropout, tiny_config, tmp_path):
    from nlp_transfer import train

    model = tiny_model_dir_no_dropout
    pruned = train(tiny_config(model=model, output_dir=str(tmp_path / "pruned"), epochs=2))
    full = train(tiny_config(model=model, output_dir=str(tmp_path / "full"), epochs=2, cls_only_last_layer=False))
    assert pruned.summary["speedups"]["cls_only_last_layer"] and not full.summary["speedups"]["cls_only_last_layer"]
    assert pruned.metrics["test"]["accuracy"] >= 0.85
    for split in ("validation", "test"):
        for name in ("accuracy", "f1_macro"):
            assert pruned.metrics[split][name] == pytest.approx(full.metrics[split][name], abs=0.02)
    assert pruned.summary["history"][-1]["train_loss"] == pytest.approx(full.summary["history"][-1]["train_loss"],
                                                                        rel=1e-3)
