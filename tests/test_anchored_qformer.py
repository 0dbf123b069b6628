"""Paper 4: token encoders, the modality-anchored Q-former and the fusion baselines (CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from neuroadapt.methods.anchored_qformer import (
    AnchoredQFormer,
    ModalityAwareQFormer,
    aggregate_logits,
    encode_tokens,
)
from neuroadapt.methods.fusion_baselines import FeatureConcat, LateFusion
from neuroadapt.methods.registry import METHODS
from neuroadapt.models.tabular import SequenceTokenEncoder, TabularMLP, TabularTokenEncoder
from neuroadapt.models.vit import ViTBackbone

torch.set_num_threads(1)

B = 4
F_CLIN, D_TEXT, L_TEXT = 5, 12, 6
DIMS = {"t1w": 32, "clinical": 16, "report_text": 16}  # token widths C of the encoders
LAYERS = 1


def make_encoders(seed: int = 0) -> dict[str, nn.Module]:
    """Tiny phase-1 encoders: a 16^3 ViT (8 tokens, 32-d), 5 clinical tokens and 6 text tokens
    (16-d), one transformer block each."""
    torch.manual_seed(seed)
    return {
        "t1w": ViTBackbone(1, (16, 16, 16), (8, 8, 8), 32, mlp_dim=64, num_layers=1, num_heads=2),
        "clinical": TabularTokenEncoder(F_CLIN, dim=16, layers=1, heads=2),
        "report_text": SequenceTokenEncoder(D_TEXT, dim=16, layers=1, heads=2),
    }


def make_inputs(seed: int = 1, label: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.zeros(B) if label is None else label
    lengths = torch.tensor([3, 6, 2, 5])[:B]
    return {
        "t1w": torch.randn(B, 1, 16, 16, 16, generator=gen) + y.view(-1, 1, 1, 1, 1),
        "clinical": torch.randn(B, F_CLIN, generator=gen) + 2 * y.view(-1, 1),
        "report_text": torch.randn(B, L_TEXT, D_TEXT, generator=gen) + 0.5 * y.view(-1, 1, 1),
        "report_text_mask": torch.arange(L_TEXT).unsqueeze(0) < lengths.unsqueeze(1),
    }


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- closed forms ----------------------------------------------------------------------------


def block_params(d: int, mlp: int) -> int:
    """MONAI TransformerBlock: qkv (no bias) 3d^2, out_proj d^2 + d, three LayerNorms (norm1,
    norm2 and the unused norm_cross_attn) 6d, MLP d*mlp + mlp + mlp*d + d."""
    return 3 * d * d + d * d + d + 6 * d + d * mlp + mlp + mlp * d + d


def mha_params(c: int) -> int:
    """nn.MultiheadAttention with biases: in_proj 3c^2 + 3c, out_proj c^2 + c."""
    return 4 * c * c + 4 * c


def lora_params(c: int, r: int, layers: int = LAYERS) -> int:
    """LoRA r*(d_in + d_out) on qkv (c -> 3c) and out_proj (c -> c) of every block."""
    return layers * (r * (c + 3 * c) + r * (c + c))


def qformer_params(anchor: str, n_q: int) -> int:
    c = DIMS[anchor]
    aux = [m for m in DIMS if m != anchor]
    per_aux = sum(DIMS[m] * c + c + n_q * c + mha_params(c) for m in aux)
    return per_aux + n_q * c + mha_params(c)


def linear_params(d_in: int, d_out: int) -> int:
    return d_in * d_out + d_out


def test_encoder_counts_and_shapes_are_closed_form():
    enc = make_encoders()
    patch = 1 * 8**3 * 32 + 32  # Conv3d 1 -> 32, kernel 8^3, with bias
    vit = patch + 8 * 32 + block_params(32, 64) + 2 * 32  # + 8 position embeddings, norm
    tab = 2 * F_CLIN * 16 + block_params(16, 32) + 2 * 16  # per-feature weight and bias
    seq = linear_params(D_TEXT, 16) + block_params(16, 32) + 2 * 16
    assert [n_params(enc[m]) for m in DIMS] == [vit, tab, seq]
    x = make_inputs()
    for m, n_tokens in [("t1w", 8), ("clinical", F_CLIN), ("report_text", L_TEXT)]:
        tokens = enc[m].embed(x[m])
        assert tokens.shape == (B, n_tokens, DIMS[m])
        assert enc[m].forward_tokens(tokens).shape == (B, n_tokens, DIMS[m])
        assert enc[m](x[m]).shape == (B, enc[m].feature_dim) == (B, DIMS[m])
    assert enc["clinical"].lora_targets() == ["blocks.0.attn.out_proj", "blocks.0.attn.qkv"]
    mlp = TabularMLP(F_CLIN, dim=8, hidden=10, layers=2)
    assert n_params(mlp) == linear_params(F_CLIN, 10) + linear_params(10, 8)
    assert mlp(x["clinical"]).shape == (B, 8)
    with pytest.raises(ValueError, match=r"\(batch, 5\) feature table"):
        enc["clinical"](torch.randn(B, 4))


def test_text_padding_is_ignored():
    enc = make_encoders()["report_text"].eval()
    x = make_inputs()
    noisy = x["report_text"].clone()
    noisy[~x["report_text_mask"]] = 100.0  # padded positions hold garbage
    with torch.no_grad():
        a = enc(x["report_text"], mask=x["report_text_mask"])
        b = enc(noisy, mask=x["report_text_mask"])
        torch.testing.assert_close(a, b)
        # and the mask matters: without it, the garbage changes the features
        assert (enc(noisy) - a).abs().max() > 1e-2
        with pytest.raises(ValueError, match="no real token"):
            enc(x["report_text"], mask=torch.zeros(B, L_TEXT, dtype=torch.bool))


# --- anchored_qformer: counts and groups ------------------------------------------------------


@pytest.mark.parametrize(("n_q", "r"), [(2, 2), (3, 0), (0, 4)])
def test_anchored_counts_are_closed_form(n_q, r):
    enc = make_encoders()
    base = sum(n_params(e) for e in enc.values())
    method = AnchoredQFormer(enc, num_queries=n_q, qformer_heads=2, r=r)
    qformer = sum(qformer_params(a, n_q) for a in DIMS) if n_q else 0
    lora = sum(lora_params(DIMS[a], r) for a in DIMS)
    heads = sum(linear_params(DIMS[a], 1) for a in DIMS)
    report = method.parameter_report()
    assert report.trainable == qformer + lora + heads
    assert report.total == base + qformer + lora + heads
    assert report.percent == pytest.approx(100 * report.trainable / report.total)
    sizes = {g["name"]: sum(p.numel() for p in g["params"]) for g in method.param_groups()}
    expected = {"qformer": qformer, "lora": lora, "heads": heads}
    assert sizes == {k: v for k, v in expected.items() if v}
    grouped = [id(p) for g in method.param_groups() for p in g["params"]]
    trainable = {id(p) for p in method.model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable
    if n_q:
        q = method.model.qformers["t1w"]
        assert q.num_tokens == 3 * n_q  # (|M'| + 1) N_q
        assert q(
            {m: torch.randn(B, 3, DIMS[m]) for m in ("clinical", "report_text")},
            {m: torch.ones(B, dtype=torch.bool) for m in ("clinical", "report_text")},
        ).shape == (B, 3 * n_q, 32)


def test_registered_and_bad_configurations_rejected():
    assert {"anchored_qformer", "late_fusion", "feature_concat"} <= set(METHODS)
    assert METHODS["anchored_qformer"] is AnchoredQFormer
    with pytest.raises(ValueError, match="divisible by the Q-former's heads"):
        AnchoredQFormer(make_encoders(), num_queries=2, qformer_heads=3)
    with pytest.raises(ValueError, match="must be distinct modalities"):
        AnchoredQFormer(make_encoders(), anchors=["pet"])
    with pytest.raises(ValueError, match="lacks"):
        AnchoredQFormer({"t1w": make_encoders()["t1w"], "clinical": TabularMLP(F_CLIN, 16)})
    with pytest.raises(ValueError, match="at least one auxiliary"):
        ModalityAwareQFormer(16, {})


# --- equivalences ------------------------------------------------------------------------------


def test_zero_queries_and_zero_lora_is_frozen_encoders_plus_heads_and_late_fusion():
    """N_q = 0: no tokens prepended; LoRA B = 0: each round is the frozen encoder + its head,
    and the aggregate equals late_fusion with the same heads and aggregation."""
    reference = make_encoders()
    method = AnchoredQFormer(make_encoders(), num_queries=0, r=2, aggregate="prob")
    assert not method.model.qformers
    method.model.eval()
    x = make_inputs()
    with torch.no_grad():
        out = method.model(x)
        for i, m in enumerate(DIMS):
            mask = x["report_text_mask"] if m == "report_text" else None
            pooled = reference[m].eval()(x[m]) if mask is None else reference[m](x[m], mask=mask)
            expected = method.model.heads[m](pooled)
            torch.testing.assert_close(out["round_logits"][:, i], expected, rtol=1e-5, atol=1e-6)
        late = LateFusion(reference, aggregate="prob")
        late.model.heads.load_state_dict(method.model.heads.state_dict())
        torch.testing.assert_close(late.model.eval()(x)["logits"], out["logits"])


def randomise(params, seed: int = 11, scale: float = 0.1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=gen))


def test_auxiliary_features_come_from_the_phase1_encoders():
    """As an auxiliary, an anchor's encoder runs without its LoRA (the phase-1 model)."""
    reference = make_encoders()["t1w"].eval()
    method = AnchoredQFormer(make_encoders(), num_queries=2, qformer_heads=2, r=2)
    randomise(method.lora_parameters())
    model = method.model.eval()
    x = make_inputs()["t1w"]
    with torch.no_grad():
        expected = encode_tokens(reference, x)
        with model.phase1("t1w"):
            torch.testing.assert_close(encode_tokens(model.raw("t1w"), x), expected)
        assert (encode_tokens(model.raw("t1w"), x) - expected).abs().max() > 1e-3
    # the LoRA is switched back on and trainable afterwards
    assert all(p.requires_grad for p in method.lora_parameters())


def test_step_changes_only_trainable_parts():
    method = AnchoredQFormer(make_encoders(), num_queries=2, qformer_heads=2, r=2)
    model = method.model.train()
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if not v.requires_grad}
    trainable = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    assert frozen and all(".lora_" in k for k in trainable if k.startswith("encoders."))
    optimizer = method.optimizer()
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    x = make_inputs(label=y)
    for _ in range(2):  # with B = 0 the first step gives lora_A no gradient
        optimizer.zero_grad()
        method.loss(model(x), {"label": y}).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(v, params[k]) for k, v in frozen.items())
    changed = {k for k, v in trainable.items() if not torch.equal(v, params[k])}
    assert changed == set(trainable)
    assert {k.split(".")[0] for k in changed} == {"qformers", "encoders", "heads"}


# --- missing modalities ---------------------------------------------------------------------


def method_with_random_adapters(n_q: int = 2) -> AnchoredQFormer:
    method = AnchoredQFormer(make_encoders(), num_queries=n_q, qformer_heads=2, r=2)
    randomise(method.lora_parameters())
    method.model.eval()
    return method


def test_dropping_a_modality_changes_only_that_sample():
    method = method_with_random_adapters()
    x = make_inputs()
    with torch.no_grad():
        full = method.model(x)
        dropped = method.model({**x, "clinical_present": torch.tensor([True, False, True, True])})
        # whatever the absent input held (garbage or NaN), the result is the same
        garbage = x["clinical"].clone()
        garbage[1] = float("nan")
        nan_input = method.model(
            {**x, "clinical": garbage, "clinical_present": torch.tensor([True, False, True, True])}
        )
    others = [0, 2, 3]
    for key in ("logits", "round_logits"):
        torch.testing.assert_close(dropped[key][others], full[key][others])
        assert (dropped[key][1] - full[key][1]).abs().max() > 1e-4
        torch.testing.assert_close(nan_input[key], dropped[key])
    assert dropped["round_present"][:, 1].tolist() == [True, False, True, True]
    # the clinical round is left out of sample 1's aggregate
    expected = aggregate_logits(
        dropped["round_logits"][1:2, [0, 2]], torch.ones(1, 2, dtype=torch.bool), "binary"
    )
    torch.testing.assert_close(dropped["logits"][1:2], expected)


def test_modality_absent_from_the_batch_equals_all_flags_false():
    method = method_with_random_adapters()
    x = make_inputs()
    without = {k: v for k, v in x.items() if not k.startswith("report_text")}
    with torch.no_grad():
        absent = method.model(without)
        flagged = method.model({**x, "report_text_present": torch.zeros(B, dtype=torch.bool)})
    torch.testing.assert_close(absent["logits"], flagged["logits"])
    assert not absent["round_present"][:, 2].any()


def test_empty_report_counts_as_absent():
    method = method_with_random_adapters()
    x = make_inputs()
    empty = x["report_text_mask"].clone()
    empty[3] = False
    with torch.no_grad():
        by_mask = method.model({**x, "report_text_mask": empty})
        by_flag = method.model({**x, "report_text_present": torch.tensor([1, 1, 1, 0]).bool()})
    torch.testing.assert_close(by_mask["logits"], by_flag["logits"])
    assert by_mask["round_present"][:, 2].tolist() == [True, True, True, False]


def test_sample_without_any_modality_raises():
    method = method_with_random_adapters()
    x = make_inputs()
    gone = torch.tensor([True, True, False, True])
    flags = {f"{m}_present": gone for m in DIMS}
    with pytest.raises(ValueError, match=r"sample\(s\) \[2\] of the batch have none"):
        method.model({**x, **flags})
    for late_or_concat in (LateFusion(make_encoders()), FeatureConcat(make_encoders())):
        with pytest.raises(ValueError, match="have none of the modalities"):
            late_or_concat.model({**x, **flags})
    # with one anchor only, a sample must have that anchor
    only_t1w = AnchoredQFormer(make_encoders(), anchors=["t1w"], num_queries=2, qformer_heads=2)
    with pytest.raises(ValueError, match=r"none of the modalities \['t1w'\]"):
        only_t1w.model({**x, "t1w_present": gone})


def test_all_auxiliaries_absent_gives_zero_tokens():
    q = ModalityAwareQFormer(16, {"a": 8, "b": 4}, num_queries=3, heads=2)
    tokens = {"a": torch.randn(2, 5, 8), "b": torch.randn(2, 2, 4)}
    present = {"a": torch.tensor([True, False]), "b": torch.tensor([False, False])}
    h = q(tokens, present)
    assert h.shape == (2, 9, 16) and torch.isfinite(h).all()
    assert torch.count_nonzero(h[1]) == 0  # nothing to project for sample 1
    assert torch.count_nonzero(h[0, 3:6]) == 0 and torch.count_nonzero(h[0, :3]) > 0
    # sample 0's cross-modal queries see modality a only: b's content does not matter
    other = {**tokens, "b": torch.randn(2, 2, 4)}
    torch.testing.assert_close(q(other, present), h)


# --- aggregation ----------------------------------------------------------------------------------


def test_aggregation_is_the_documented_mean():
    logits = torch.tensor([[[2.0], [-1.0], [30.0]], [[0.5], [4.0], [-3.0]]])  # (B=2, R=3, 1)
    present = torch.tensor([[True, True, False], [True, True, True]])
    by_logit = aggregate_logits(logits, present, "binary", "logit")
    torch.testing.assert_close(by_logit, torch.tensor([[0.5], [0.5]]))
    by_prob = aggregate_logits(logits, present, "binary", "prob")
    p = torch.sigmoid(logits.squeeze(-1))
    expected = torch.stack([p[0, :2].mean(), p[1].mean()])
    torch.testing.assert_close(torch.sigmoid(by_prob.squeeze(-1)), expected)
    saturated = aggregate_logits(
        torch.full((1, 2, 1), 80.0), torch.ones(1, 2, dtype=bool), "binary"
    )
    torch.testing.assert_close(saturated, torch.full((1, 1), 80.0))  # exact in log space
    multi = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    agg = aggregate_logits(multi, present, "multiclass", "prob")
    mean_p = torch.stack([multi[0, :2].softmax(-1).mean(0), multi[1].softmax(-1).mean(0)])
    torch.testing.assert_close(agg.softmax(-1), mean_p)
    torch.testing.assert_close(agg.exp(), mean_p)  # log of the mean probability
    with pytest.raises(ValueError, match="no round"):
        aggregate_logits(logits, torch.zeros(2, 3, dtype=torch.bool), "binary")


def test_method_output_aggregates_its_rounds():
    method = method_with_random_adapters()
    x = make_inputs()
    with torch.no_grad():
        out = method.model(x)
    probs = torch.sigmoid(out["round_logits"]).mean(dim=1)  # every round present
    torch.testing.assert_close(torch.sigmoid(out["logits"]), probs)
    method.model.aggregate = "logit"
    with torch.no_grad():
        torch.testing.assert_close(method.model(x)["logits"], out["round_logits"].mean(dim=1))


def test_rounds_loss_is_each_anchors_own_loss():
    method = method_with_random_adapters()
    x = make_inputs()
    present = torch.tensor([True, False, True, True])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    with torch.no_grad():
        out = method.model({**x, "clinical_present": present})
        bce = nn.functional.binary_cross_entropy_with_logits
        rl = out["round_logits"][..., 0]
        expected = (bce(rl[:, 0], y) + bce(rl[present, 1], y[present]) + bce(rl[:, 2], y)) / 3
        torch.testing.assert_close(method.loss(out, {"label": y}), expected)


# --- baselines -------------------------------------------------------------------------------------


def test_baseline_counts_and_missing_features():
    enc = make_encoders()
    base = sum(n_params(e) for e in enc.values())
    late = LateFusion(enc)
    heads = sum(linear_params(d, 1) for d in DIMS.values())
    assert late.parameter_report().trainable == heads
    assert late.parameter_report().total == base + heads
    concat = FeatureConcat(make_encoders(), head_hidden=8)
    width = sum(DIMS.values()) + len(DIMS)  # features + one presence flag per modality
    head = linear_params(width, 8) + linear_params(8, 1)
    assert concat.parameter_report().trainable == head
    assert concat.parameter_report().total == base + head
    x = make_inputs()
    concat.model.eval()
    seen = {}
    hook = concat.head.register_forward_hook(lambda m, i, o: seen.update(features=i[0]))
    with torch.no_grad():
        concat.model({**x, "clinical_present": torch.tensor([True, False, True, True])})
    hook.remove()
    f = seen["features"]
    assert f.shape == (B, width)
    assert torch.count_nonzero(f[1, 32:48]) == 0  # clinical features zeroed
    assert f[:, -3:].tolist() == [[1, 1, 1], [1, 0, 1], [1, 1, 1], [1, 1, 1]]


# --- training --------------------------------------------------------------------------------------


def train_losses(method, x, y, steps: int = 8) -> list[float]:
    optimizer = method.optimizer()
    model = method.model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = method.loss(model(x), {"label": y})
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


FAST = {
    "anchored_qformer": lambda enc: AnchoredQFormer(
        enc, num_queries=2, qformer_heads=2, r=2, lr_qformer=1e-2, lr_lora=1e-2, lr_heads=3e-2
    ),
    "late_fusion": lambda enc: LateFusion(enc, lr_heads=3e-2),
    "feature_concat": lambda enc: FeatureConcat(enc, head_hidden=16, lr_head=1e-2),
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_each_method_loss_drops_on_tiny_batch(name):
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    x = make_inputs(label=y)  # label visible in intensity, a clinical shift and the text
    method = FAST[name](make_encoders())
    losses = train_losses(method, x, y)
    assert losses[-1] < 0.8 * losses[0], losses


def test_trainable_state_saves_and_loads_alone(tmp_path):
    method = method_with_random_adapters()
    randomise(method.qformer_parameters() + method.head_parameters(), seed=3)
    path = method.save_trainable(tmp_path / "anchored.safetensors")
    n_trainable = method.parameter_report().trainable
    assert 4 * n_trainable <= path.stat().st_size < 4 * n_trainable + 64 * 1024
    fresh = AnchoredQFormer(make_encoders(), num_queries=2, qformer_heads=2, r=2)
    fresh.load_trainable(path)
    fresh.model.eval()
    x = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(fresh.model(x)["logits"], method.model(x)["logits"])
    other = AnchoredQFormer(make_encoders(), num_queries=3, qformer_heads=2, r=2)
    with pytest.raises(ValueError, match="do not fit this model"):
        other.load_trainable(path)
    late = LateFusion(make_encoders())
    late_path = late.save_trainable(tmp_path / "late.safetensors")
    copy.deepcopy(late).load_trainable(late_path)


def test_multiclass_outputs_and_loss():
    method = AnchoredQFormer(
        make_encoders(), task="multiclass", num_classes=3, num_queries=2, qformer_heads=2, r=2
    )
    out = method.model(make_inputs())
    assert out["logits"].shape == (B, 3) and out["round_logits"].shape == (B, 3, 3)
    torch.testing.assert_close(out["logits"].exp().sum(-1), torch.ones(B))  # log mean softmax
    loss = method.loss(out, {"label": torch.tensor([0, 1, 2, 1])})
    loss.backward()
    assert all(p.grad is not None for p in method.head_parameters())
