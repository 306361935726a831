"""Training only the used word-embedding rows gives AdamW's full-table result."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from nlp_transfer.speed.embedding_rows import (
    SCALE_KEY, track_decay, train_all_rows, train_used_rows, used_token_ids,
)

VOCAB = 200
USED_TOKENS = torch.arange(10, 60)  # the "training set" uses 50 of the 200 rows


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def _batches(n: int):
    generator = torch.Generator().manual_seed(1)
    for _ in range(n):
        ids = USED_TOKENS[torch.randint(0, len(USED_TOKENS), (6, 9), generator=generator)]
        ids[:, 0] = 10  # every text starts with the same token, as [CLS] does
        ids[2, 5:] = 0  # padding (token 0, the padding row)
        mask = (ids != 0).long()
        yield {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (6,), generator=generator)}


def _optimizer(params_or_groups):
    return torch.optim.AdamW(params_or_groups, lr=5e-3, weight_decay=0.1, fused=True)


def _compact(model: BertForSequenceClassification):
    embedding = model.get_input_embeddings()
    weight = embedding.weight
    used = used_token_ids([USED_TOKENS.numpy()], VOCAB, always=(0,))
    rows = train_used_rows(embedding, used)
    params = [rows if p is weight else p for p in model.parameters()]
    optimizer = _optimizer(params)
    track_decay(embedding, optimizer)
    return embedding, rows, optimizer


def _train(model, optimizer, steps: int, start: int = 0):
    model.train()
    for batch in list(_batches(start + steps))[start:]:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_every_row_ends_where_full_table_adamw_puts_it():
    reference = _model()
    _train(reference, _optimizer(reference.parameters()), steps=8)

    model = _model()
    initial = model.get_input_embeddings().weight.detach().clone()
    embedding, rows, optimizer = _compact(model)
    _train(model, optimizer, steps=8)
    assert rows.shape == (51, 32) and embedding.weight.grad is None  # no full-table gradient, no full state
    assert optimizer.state[rows]["exp_avg"].shape == (51, 32)

    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-6, msg=name)
    unused = torch.ones(VOCAB, dtype=torch.bool)
    unused[USED_TOKENS] = False
    unused[0] = False
    table = ours["bert.embeddings.word_embeddings.weight"]
    decay = optimizer.state[rows][SCALE_KEY]
    assert decay == pytest.approx((1 - 5e-3 * 0.1) ** 8)  # the constant learning rate here
    assert not torch.equal(table[unused], initial[unused])  # weight decay reached the unused rows too
    torch.testing.assert_close(table[unused], initial[unused] * decay)


def test_evaluation_reads_the_trained_table():
    reference = _model()
    _train(reference, _optimizer(reference.parameters()), steps=5)
    model = _model()
    _, _, optimizer = _compact(model)
    _train(model, optimizer, steps=5)
    batch = next(_batches(1))
    batch["input_ids"][0, 3] = 150  # a token the training set never used
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**batch).logits, reference.eval()(**batch).logits,
                                   rtol=1e-4, atol=1e-6)


def test_a_checkpoint_resumes_to_the_same_weights():
    uninterrupted = _model()
    _, _, optimizer = _compact(uninterrupted)
    _train(uninterrupted, optimizer, steps=4)
    # Copies, as a checkpoint file holds: state_dict() returns the live tensors.
    saved_model, saved_optimizer = copy.deepcopy(uninterrupted.state_dict()), copy.deepcopy(optimizer.state_dict())
    assert saved_optimizer["state"][0][SCALE_KEY] < 1.0  # the decay so far travels with the checkpoint
    _train(uninterrupted, optimizer, steps=4, start=4)

    resumed = _model()
    embedding, rows, optimizer = _compact(resumed)
    resumed.load_state_dict(saved_model)  # gathers the rows from the loaded table
    optimizer.load_state_dict(saved_optimizer)
    _train(resumed, optimizer, steps=4, start=4)
    ours, theirs = resumed.state_dict(), uninterrupted.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_token_outside_the_prepared_rows_is_refused():
    model = _model()
    _compact(model)
    batch = next(_batches(1))
    batch["input_ids"][1, 2] = 150
    with pytest.raises(RuntimeError, match=r"token ids \[150\]"):
        model.train()(**batch)


def test_train_all_rows_leaves_a_plain_embedding_holding_the_result():
    model = _model()
    embedding, rows, optimizer = _compact(model)
    _train(model, optimizer, steps=2)
    train_all_rows(embedding)
    assert type(embedding) is nn.Embedding and embedding.weight.requires_grad
    assert not hasattr(embedding, "rows")
    assert torch.equal(embedding.weight[USED_TOKENS], rows[USED_TOKENS - 10 + 1].detach())  # row 0 is padding


def test_used_token_ids_checks_the_vocabulary():
    assert used_token_ids([[5, 3, 5], [7]], 10, always=(0,)).tolist() == [0, 3, 5, 7]
    with pytest.raises(ValueError, match="outside"):
        used_token_ids([[12]], 10)


def test_training_with_and_without_it_saves_the_same_model(tiny_model_dir_no_dropout, tiny_config, tmp_path):
    from nlp_transfer import train

    model = tiny_model_dir_no_dropout
    compact = train(tiny_config(model=model, output_dir=str(tmp_path / "compact"), epochs=2, weight_decay=0.1))
    full = train(tiny_config(model=model, output_dir=str(tmp_path / "full"), epochs=2, weight_decay=0.1,
                             compact_embeddings=False))
    ours = load_file(str(tmp_path / "compact" / "model.safetensors"))
    theirs = load_file(str(tmp_path / "full" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-3, atol=1e-5, msg=name)
    used = compact.summary["speedups"]["compact_embeddings"]
    assert 0 < used["trained_rows"] < used["rows"] // 10 and full.summary["speedups"]["compact_embeddings"] is None
    assert compact.metrics["test"]["accuracy"] >= 0.85
    assert compact.metrics["test"]["accuracy"] == pytest.approx(full.metrics["test"]["accuracy"], abs=0.02)


@pytest.mark.parametrize("strategy", ["freeze", "lora", "gradual-unfreeze"])
def test_strategies_that_do_not_train_every_embedding_row_keep_the_plain_table(tiny_config, tmp_path, strategy):
    from nlp_transfer import train

    if strategy == "lora":
        pytest.importorskip("peft")

    result = train(tiny_config(strategy=strategy, epochs=1, **({"freeze_layers": 1} if strategy == "freeze" else {})))
    assert result.summary["speedups"]["compact_embeddings"] is None


def test_gradient_clipping_counts_the_compact_table():
    from accelerate import Accelerator

    from nlp_transfer.loop import clip_gradients as _clip_gradients

    model = _model()
    _, rows, optimizer = _compact(model)
    model.train()(**next(_batches(1))).loss.backward()
    _clip_gradients(Accelerator(cpu=True), model, optimizer, max_norm=1e-3)
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    assert any(g is rows.grad for g in grads)
    assert torch.nn.utils.get_total_norm(grads).item() == pytest.approx(1e-3, rel=1e-4)


def test_the_padding_row_is_always_prepared():
    model = _model()
    embedding = model.get_input_embeddings()
    train_used_rows(embedding, torch.tensor([10, 11]))  # padding (0) not among them
    assert embedding.used.tolist() == [0, 10, 11]
    out = model.train()(input_ids=torch.tensor([[10, 11, 0]]), attention_mask=torch.tensor([[1, 1, 0]]))
    assert torch.isfinite(out.logits).all()
