"""``kldiv.transformers``: the fused distillation loss of tiny causal LMs built from configs (Llama,
Qwen2, Gemma2 with its soft cap and tied embeddings, Cohere with its logit scale, a head with a bias)
equals the naive path — materialized logits, the model's own shift, ``F.kl_div`` / TRL's formula /
the model's own cross-entropy — in value and in every student gradient, to 1e-5 in float32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from kldiv.transformers import distillation_loss  # noqa: E402

VOCAB, HIDDEN, SEQ = 1000, 64, 12
TOLERANCE = 1e-5


def _config(kind: str, hidden: int = HIDDEN, layers: int = 2):
    common = {
        "vocab_size": VOCAB,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    if kind in ("llama", "llama_bias"):
        return transformers.LlamaConfig(**common), transformers.LlamaForCausalLM
    if kind == "qwen2":
        return transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
    if kind == "gemma2":
        config = transformers.Gemma2Config(**common, head_dim=16, final_logit_softcapping=3.0)
        return config, transformers.Gemma2ForCausalLM
    if kind == "cohere":
        return transformers.CohereConfig(**common, logit_scale=0.5), transformers.CohereForCausalLM
    raise ValueError(kind)


def tiny(kind: str, seed: int, **sizes) -> torch.nn.Module:
    config, model_type = _config(kind, **sizes)
    torch.manual_seed(seed)
    model = model_type(config)
    if kind == "llama_bias":  # a head with a bias (the model's own forward uses it too)
        model.lm_head = torch.nn.Linear(HIDDEN, VOCAB, bias=True)
    with torch.no_grad():  # logits large enough that the soft cap and the temperature matter
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


def batch(seed: int = 0, rows: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (rows, SEQ), generator=generator)
    attention_mask = torch.ones(rows, SEQ, dtype=torch.long)
    attention_mask[0, -3:] = 0  # right padding
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[1, :4] = -100  # a prompt
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def trl_generalized_jsd(student_logits, teacher_logits, beta):
    """TRL's ``generalized_jsd_loss`` before masking (trl/experimental/gkd/gkd_trainer.py, 1.16)."""
    s, t = F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1)
    if beta == 0:
        return F.kl_div(s, t, reduction="none", log_target=True)
    if beta == 1:
        return F.kl_div(t, s, reduction="none", log_target=True)
    beta = torch.tensor(beta, dtype=s.dtype)
    m = torch.logsumexp(torch.stack([s + torch.log1p(-beta), t + torch.log(beta)]), dim=0)
    return beta * F.kl_div(m, t, reduction="none", log_target=True) + (1 - beta) * F.kl_div(
        m, s, reduction="none", log_target=True
    )


def naive(student, teacher, data, *, trl_beta, temperature=1.0, t_squared=False, alpha=0.0, num_items=None):
    """The materialized program: both models' logits, shifted as TRL / ForCausalLMLoss do."""
    inputs = {k: data[k] for k in ("input_ids", "attention_mask")}
    s = student(**inputs).logits[:, :-1]
    with torch.no_grad():
        t = teacher(**inputs).logits[:, :-1]
    labels = data["labels"][:, 1:]
    keep = labels != -100
    per_token = trl_generalized_jsd(s / temperature, t / temperature, trl_beta).sum(-1)
    kd = per_token[keep].sum() * (temperature**2 if t_squared else 1.0)
    count = keep.sum() if num_items is None else num_items
    ce = F.cross_entropy(s[keep], labels[keep], reduction="sum")
    return ((1 - alpha) * kd + alpha * ce) / count


def grads(model, value):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(value, params)


def assert_close(got, want, tolerance=TOLERANCE):
    got, want = got.detach().double(), want.detach().double()
    error = float((got - want).norm() / want.norm().clamp(min=1e-30))
    assert error <= tolerance, error


TRL_BETA = {
    "forward": (0, {"direction": "forward"}),
    "reverse": (1, {"direction": "reverse"}),
    "js": (0.3, {"beta": 0.3}),
}


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma2", "cohere", "llama_bias"])
@pytest.mark.parametrize("divergence", ["forward", "reverse", "js"])
def test_loss_and_student_gradients_equal_the_naive_path(kind, divergence):
    student, teacher = tiny(kind, 0), tiny(kind, 1)
    data = batch()
    trl_beta, options = TRL_BETA[divergence]
    name = "js" if divergence == "js" else "kl"
    value = distillation_loss(
        student, teacher, data, divergence=name, temperature=2.0, chunk_size=7, **options
    )
    expected = naive(student, teacher, data, trl_beta=trl_beta, temperature=2.0)
    assert_close(value, expected)
    for got, want in zip(grads(student, value), grads(student, expected), strict=True):
        assert_close(got, want)


def test_heads_are_read_from_the_models():
    """Gemma2: head tied to the embeddings, soft cap from the config; Cohere: the logit scale;
    a replaced head: its bias. (The naive-path test above shows each one matters.)"""
    from kldiv.transformers import output_head

    gemma = tiny("gemma2", 0)
    head = output_head(gemma, "student")
    assert head.weight is gemma.get_input_embeddings().weight and head.bias is None
    assert head.logit_map.softcap == 3.0 and head.logit_map.scale is None
    assert output_head(tiny("cohere", 0), "student").logit_map.scale == 0.5
    biased = tiny("llama_bias", 0)
    assert output_head(biased, "student").bias is biased.lm_head.bias


@pytest.mark.parametrize("t_squared", [False, True])
def test_temperature_squared_and_cross_entropy_mixing(t_squared):
    """``alpha = 1`` is the model's own loss (``ForCausalLMLoss`` with ``num_items_in_batch``)."""
    student, teacher = tiny("qwen2", 0), tiny("qwen2", 1)
    data = batch(2)
    mixed = distillation_loss(
        student,
        teacher,
        data,
        temperature=1.5,
        alpha=0.25,
        scale_by_temperature_squared=t_squared,
        chunk_size=5,
    )
    expected = naive(student, teacher, data, trl_beta=0, temperature=1.5, t_squared=t_squared, alpha=0.25)
    assert_close(mixed, expected)
    for got, want in zip(grads(student, mixed), grads(student, expected), strict=True):
        assert_close(got, want)
    own = student(**data, num_items_in_batch=torch.tensor(17)).loss
    assert_close(
        distillation_loss(student, teacher, data, alpha=1.0, num_items_in_batch=torch.tensor(17)), own
    )


def test_gradient_accumulation_is_exact():
    """Two micro-batches with the step's token count sum to the loss and gradients of one batch."""
    student, teacher = tiny("llama", 0), tiny("llama", 1)
    data = batch(3, rows=4)
    total = int((data["labels"][:, 1:] != -100).sum())
    whole = distillation_loss(student, teacher, data, alpha=0.5)
    halves = [
        distillation_loss(
            student, teacher, {k: v[rows] for k, v in data.items()}, alpha=0.5, num_items_in_batch=total
        )
        for rows in (slice(0, 1), slice(1, 4))  # uneven token counts: a mean of means would differ
    ]
    assert_close(halves[0] + halves[1], whole)
    summed = [a + b for a, b in zip(grads(student, halves[0]), grads(student, halves[1]), strict=True)]
    for got, want in zip(summed, grads(student, whole), strict=True):
        assert_close(got, want)


def test_top_k_teacher_with_k_equal_v_is_dense_and_stored_top_k_equals_live():
    from kldiv.fused.torch import topk_teacher
    from kldiv.transformers import last_hidden_states, output_head

    student, teacher = tiny("gemma2", 0), tiny("gemma2", 1)
    data = batch(4)
    dense = distillation_loss(student, teacher, data, temperature=1.7)
    full = distillation_loss(student, teacher, data, temperature=1.7, top_k=VOCAB)
    assert_close(full, dense)
    live = distillation_loss(student, teacher, data, temperature=1.7, top_k=16)
    head = output_head(teacher, "teacher")
    with torch.no_grad():
        hidden = last_hidden_states(teacher, data)
    indices, values = topk_teacher(
        teacher_hidden=hidden,
        teacher_weight=head.weight,
        k=16,
        temperature=1.7,
        teacher_softcap=head.logit_map.softcap,
    )
    stored = distillation_loss(
        student,
        None,
        {**data, "teacher_topk_indices": indices, "teacher_topk_values": values},
        temperature=1.7,
    )
    assert_close(stored, live, tolerance=1e-6)
    assert float(live) <= float(dense) + 1e-6  # the coarsened divergence is a lower bound


def test_errors_name_the_argument():
    student = tiny("llama", 0)
    data = batch()
    config, model_type = _config("llama")
    config.vocab_size = VOCAB + 8
    other = model_type(config)
    with pytest.raises(ValueError, match=f"teacher {VOCAB + 8} and student {VOCAB}"):
        distillation_loss(student, other, data)
    with pytest.raises(ValueError, match="`divergence`"):
        distillation_loss(student, student, data, divergence="kld")
    with pytest.raises(ValueError, match="`alpha`"):
        distillation_loss(student, student, data, alpha=1.5)
    with pytest.raises(ValueError, match="stored top-k"):
        distillation_loss(student, None, data)
    with pytest.raises(TypeError, match="`batch`"):
        distillation_loss(student, student, data["input_ids"])
    with pytest.raises(TypeError, match="`student`"):
        distillation_loss(torch.nn.Linear(2, 2), student, data)


def test_an_unknown_logit_map_is_refused():
    class Doubled(transformers.LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0
            return out

    config, _ = _config("llama")
    model = Doubled(config)
    with pytest.raises(ValueError, match="could not reproduce the logits of Doubled"):
        distillation_loss(model, tiny("llama", 1), batch())


def test_empty_batch_gives_zero():
    student, teacher = tiny("llama", 0), tiny("llama", 1)
    data = batch()
    data["labels"] = torch.full_like(data["labels"], -100)
    value = distillation_loss(student, teacher, data, alpha=0.5)
    assert float(value) == 0.0
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads(student, value))


def test_a_padded_teacher_vocabulary_is_aligned_on_request():
    """A teacher with 8 more vocabulary entries (a padded head): ``vocab_alignment="truncate_teacher"``
    equals the naive path on the teacher's first V logits (dense and top-k with k = V)."""
    student = tiny("llama", 0)
    config, model_type = _config("llama")
    config.vocab_size = VOCAB + 8
    torch.manual_seed(1)
    teacher = model_type(config).eval()
    data = batch(5)
    value = distillation_loss(student, teacher, data, vocab_alignment="truncate_teacher", temperature=1.5)
    inputs = {k: data[k] for k in ("input_ids", "attention_mask")}
    s = student(**inputs).logits[:, :-1]
    with torch.no_grad():
        t = teacher(**inputs).logits[:, :-1, :VOCAB]
    keep = data["labels"][:, 1:] != -100
    expected = trl_generalized_jsd(s / 1.5, t / 1.5, 0).sum(-1)[keep].sum() / keep.sum()
    assert_close(value, expected)
    for got, want in zip(grads(student, value), grads(student, expected), strict=True):
        assert_close(got, want)
    top = distillation_loss(
        student, teacher, data, vocab_alignment="truncate_teacher", temperature=1.5, top_k=VOCAB
    )
    assert_close(top, expected)
    with pytest.raises(ValueError, match="'truncate_teacher' with `top_k`"):
        distillation_loss(student, teacher, data, vocab_alignment="pad_student", top_k=8)


def test_return_stats_gives_per_position_statistics():
    """``return_stats=True``: ``[B, T]`` per-token statistics of the same pass (0 on ignored labels);
    the loss is unchanged and ``per_token`` sums to it times the kept tokens."""
    student, teacher = tiny("qwen2", 0), tiny("qwen2", 1)
    data = batch(6)
    loss, stats = distillation_loss(student, teacher, data, temperature=2.0, return_stats=True)
    plain = distillation_loss(student, teacher, data, temperature=2.0)
    assert_close(loss, plain, tolerance=1e-7)
    keep = torch.nn.functional.pad(data["labels"], (0, 1), value=-100)[:, 1:] != -100
    assert stats["per_token"].shape == keep.shape and torch.all(stats["per_token"][~keep] == 0)
    assert_close(stats["per_token"].sum() / keep.sum(), plain)
    with torch.no_grad():
        s = student(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
    assert_close(stats["student_lse"][keep], torch.logsumexp(s / 2.0, -1)[keep])
    with pytest.raises(ValueError, match="`return_stats`"):
        distillation_loss(student, teacher, data, alpha=1.0, return_stats=True)
