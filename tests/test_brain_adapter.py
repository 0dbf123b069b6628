"""Brain-Adapter (paper 2) on a tiny 3D ViT and the hashing text encoder (CPU, seconds)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neuroadapt.errors import InputError
from neuroadapt.methods.brain_adapter import (
    BottleneckAdapter,
    BrainAdapter,
    bottleneck_strides,
    clip_contrastive_loss,
    resample_volume,
)
from neuroadapt.methods.registry import get_method
from neuroadapt.models.text import HashingTextEncoder
from neuroadapt.models.vit import ViTBackbone

torch.set_num_threads(1)

# tiny ViT: 1 channel, 16^3 input, patch 8 (8 tokens), 32-d, 2 blocks, MLP 64
VIT = {"c": 1, "size": (16, 16, 16), "patch": (8, 8, 8), "d": 32, "mlp": 64, "layers": 2}
TEXT_DIM, EMBED, C_IN, HIDDEN, K = 16, 8, 2, 4, 3
POSITIVE, NEGATIVE = "patient with condition", "healthy control"


def tiny_vit() -> ViTBackbone:
    return ViTBackbone(
        VIT["c"], VIT["size"], VIT["patch"], VIT["d"], VIT["mlp"], VIT["layers"], num_heads=2
    )


def make(mode: str = "trainable_projection", seed: int = 0, **kwargs) -> BrainAdapter:
    torch.manual_seed(seed)
    settings = {
        "mode": mode,
        "text_dim": TEXT_DIM,
        "embed_dim": EMBED,
        "in_channels": C_IN,
        "adapter_channels": HIDDEN,
        **kwargs,
    }
    return BrainAdapter(tiny_vit(), **settings)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def vit_params_closed_form() -> int:
    """MONAI ViT: patch conv + position embeddings, per block 3 LayerNorms (norm1, norm2 and
    the unused norm_cross_attn), qkv (no bias), out_proj, 2-layer MLP; final LayerNorm."""
    c, d, m, layers = VIT["c"], VIT["d"], VIT["mlp"], VIT["layers"]
    tokens = math.prod(s // p for s, p in zip(VIT["size"], VIT["patch"], strict=True))
    embed = c * math.prod(VIT["patch"]) * d + d + tokens * d
    block = 3 * 2 * d + 3 * d * d + (d * d + d) + (d * m + m) + (m * d + d)
    return embed + layers * block + 2 * d


def adapter_params_closed_form(
    c_in: int = C_IN, c_vit: int = VIT["c"], hidden: int = HIDDEN, stages: int = 1
) -> int:
    """mix (1x1x1) + encode (``stages`` k^3 convs, the first from the input) + refine (k^3)
    + up (1x1x1)."""
    mix = c_in * c_vit + c_vit
    encode = (c_in * hidden * K**3 + hidden) + (stages - 1) * (hidden * hidden * K**3 + hidden)
    refine = hidden * hidden * K**3 + hidden
    up = hidden * c_vit + c_vit
    return mix + encode + refine + up


PROJECTIONS = VIT["d"] * EMBED + TEXT_DIM * EMBED  # no bias, as CLIP
LOGIT_SCALE = 1
HEAD = EMBED + (2 * EMBED * 1 + 1)  # missing-report embedding + linear head, one logit


def batch(n: int = 8, seed: int = 0, size=(12, 20, 16)):
    """Class-dependent volumes (class 1 brighter) and reports; labels alternate 0, 1."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    image = torch.randn(n, C_IN, *size, generator=g) * 0.5 + 1.5 * labels.view(-1, 1, 1, 1, 1)
    texts = [POSITIVE if y else NEGATIVE for y in labels.tolist()]
    encoding = HashingTextEncoder(dim=TEXT_DIM, seed=0).encode(texts)
    inputs = {"image": image, "report_text": encoding.tokens, "report_text_mask": encoding.mask}
    return inputs, labels.float()


# --- structure and counts -----------------------------------------------------------------


def test_vit_closed_form_matches_the_module():
    assert n_params(tiny_vit()) == vit_params_closed_form()


@pytest.mark.parametrize("mode", ["trainable_projection", "frozen_projection"])
def test_parameter_counts_match_closed_form(mode):
    method = make(mode)
    adapter = adapter_params_closed_form()
    total = adapter + vit_params_closed_form() + PROJECTIONS + LOGIT_SCALE + HEAD
    trainable = (
        adapter + HEAD + (PROJECTIONS + LOGIT_SCALE if mode == "trainable_projection" else 0)
    )
    report = method.parameter_report()
    assert (report.total, report.trainable) == (total, trainable)
    assert report.percent == pytest.approx(100 * trainable / total)
    groups = {g["name"]: sum(p.numel() for p in g["params"]) for g in method.param_groups()}
    expected = {"adapter": adapter, "head": HEAD}
    if mode == "trainable_projection":
        expected["projections"] = PROJECTIONS + LOGIT_SCALE
    assert groups == expected
    lrs = {g["name"]: g["lr"] for g in method.param_groups()}
    assert lrs["adapter"] == method.lr_adapter and lrs["head"] == method.lr_head
    # a fixed temperature leaves the logit scale out of the trainable set
    fixed = make(mode, learnable_temperature=False).parameter_report()
    assert fixed.trainable == trainable - (LOGIT_SCALE if mode == "trainable_projection" else 0)


def test_paper_sized_adapter_strides_the_volume_onto_the_m3d_grid():
    """The paper's 256^3 MRI onto vit_m3d's 32x256x256: three stride-(2, 1, 1) stages; the
    demo's 48^3 onto vit_tiny's 32^3: one unstrided conv (the 1.5x rest is resampled)."""
    assert bottleneck_strides((256, 256, 256), (32, 256, 256)) == [(2, 1, 1)] * 3
    assert bottleneck_strides((48, 48, 48), (32, 32, 32)) == []
    assert bottleneck_strides((64, 40, 32), (16, 16, 32)) == [(2, 2, 1), (2, 1, 1)]
    assert bottleneck_strides(None, (32, 32, 32)) == []
    with torch.device("meta"):
        adapter = BottleneckAdapter(2, 1, (32, 256, 256), hidden_channels=8, in_size=(256,) * 3)
    assert n_params(adapter) == adapter_params_closed_form(2, 1, hidden=8, stages=3)
    # strides reach the ViT grid exactly (no resampling), shown on a smaller analogue
    small = BottleneckAdapter(2, 1, (4, 16, 16), hidden_channels=4, in_size=(32, 16, 16))
    assert small.encode(torch.zeros(1, 2, 32, 16, 16)).shape == (1, 4, 4, 16, 16)
    assert small(torch.zeros(1, 2, 32, 16, 16)).shape == (1, 1, 4, 16, 16)


def test_the_learned_branch_reads_the_full_resolution_volume():
    """After training moves ``up`` off zero, detail finer than the ViT grid (which a resample
    averages away) changes the adapter's output."""
    adapter = BottleneckAdapter(1, 1, (4, 4, 4), hidden_channels=4, in_size=(16, 16, 16))
    torch.nn.init.normal_(adapter.up.weight)
    x = torch.zeros(1, 1, 16, 16, 16)
    checker = x.clone()
    checker[..., ::2] = 1.0
    checker[..., 1::2] = -1.0  # zero mean in every 2x2x2 cell: invisible after area averaging
    with torch.no_grad():
        torch.testing.assert_close(
            resample_volume(adapter.mix(checker), (4, 4, 4)),
            resample_volume(adapter.mix(x), (4, 4, 4)),
        )
        assert (adapter(checker) - adapter(x)).abs().max() > 1e-3


def test_registered_and_built_like_the_trainer_builds_methods():
    assert get_method("brain_adapter") is BrainAdapter
    method = BrainAdapter(tiny_vit(), task="multiclass", num_classes=3, text_dim=TEXT_DIM)
    assert method.name == "brain_adapter" and method.modalities == ("image", "report_text")
    inputs, _ = batch(3)
    inputs["image"] = inputs["image"][:, :1]  # in_channels defaults to the ViT's (1)
    assert method.model(inputs)["logits"].shape == (3, 3)


# --- adapter ------------------------------------------------------------------------------


def test_resample_volume_area_then_trilinear():
    x = torch.arange(8.0).view(1, 1, 2, 2, 2)
    torch.testing.assert_close(resample_volume(x, (1, 1, 1)), x.mean().view(1, 1, 1, 1, 1))
    assert resample_volume(x, (2, 2, 2)) is x
    # shrink the first axis (area mean of 2 slices), grow the others (trilinear)
    y = resample_volume(torch.ones(1, 3, 4, 2, 2), (2, 5, 5))
    assert y.shape == (1, 3, 2, 5, 5)
    torch.testing.assert_close(y, torch.ones_like(y))


def test_adapter_starts_as_resample_plus_channel_mean():
    """Zero-initialised residual branch: at step 0 the ViT sees the resampled channel mean."""
    method = make()
    x = torch.randn(2, C_IN, 12, 20, 16)
    with torch.no_grad():
        expected = resample_volume(x.mean(dim=1, keepdim=True), VIT["size"])
        torch.testing.assert_close(method.adapter(x), expected)
        assert torch.count_nonzero(method.adapter.up.weight) == 0


# --- training behaviour -------------------------------------------------------------------


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("mode", ["trainable_projection", "frozen_projection"])
def test_one_step_changes_only_what_trains(mode):
    method = make(mode)
    inputs, labels = batch(4)
    tokens = inputs["report_text"].clone()
    model = method.model
    before = {name: snapshot(getattr(model, name)) for name, _ in model.named_children()}
    scale = model.logit_scale.detach().clone()
    optimiser = method.optimizer()
    optimiser.zero_grad()
    method.loss(model(inputs), {"label": labels}).backward()
    optimiser.step()
    assert changed(before["vit"], model.vit) == set()  # frozen ViT
    # text side: the report embeddings are inputs, untouched; a fresh encoding is identical
    assert torch.equal(inputs["report_text"], tokens) and not tokens.requires_grad
    assert torch.equal(batch(4)[0]["report_text"], tokens)
    assert changed(before["adapter"], model.adapter) == set(model.adapter.state_dict())
    assert changed(before["head"], model.head) == {"classifier.weight", "classifier.bias"}
    trains = mode == "trainable_projection"
    for name in ("image_projection", "text_projection"):
        assert changed(before[name], getattr(model, name)) == ({"weight"} if trains else set())
    assert torch.equal(model.logit_scale, scale) is not trains
    assert not model.vit.training and model.training


def train(mode: str, steps: int = 25) -> tuple[dict[str, float], dict[str, float]]:
    """Loss terms before and after ``steps`` AdamW steps on the synthetic batch."""
    method = make(mode, lr_adapter=1e-2, lr_projections=1e-2, lr_head=1e-2)
    inputs, labels = batch(8)
    optimiser = method.optimizer(weight_decay=0.0)
    first: dict[str, float] = {}
    for _ in range(steps):
        optimiser.zero_grad()
        terms = method.loss_terms(method.model(inputs), labels)
        terms["total"].backward()
        optimiser.step()
        first = first or {k: v.item() for k, v in terms.items()}
    with torch.no_grad():
        last = {k: v.item() for k, v in method.loss_terms(method.model(inputs), labels).items()}
    return first, last


def test_loss_drops_on_a_tiny_batch():
    first, last = train("trainable_projection")
    assert last["total"] < 0.5 * first["total"]
    assert last["classification"] < 0.5 * first["classification"]
    # 4 identical reports per class among 8 samples: each image matches 4 texts equally
    # well, so the symmetric InfoNCE cannot go below ln 4; training reaches that floor
    assert math.log(4) - 1e-3 < last["contrastive"] < math.log(4) + 0.1
    frozen_first, frozen_last = train("frozen_projection")
    assert frozen_first == first  # same start: only what trains differs
    assert frozen_last["classification"] < frozen_first["classification"]
    # paper 2's finding in miniature: frozen projections fit the labels more slowly
    assert last["classification"] < frozen_last["classification"]


# --- contrastive loss ---------------------------------------------------------------------


def test_info_nce_equals_a_hand_computed_value():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[2.0, 0.0], [0.6, 0.8]])  # normalised: (1, 0) and (0.6, 0.8)
    # similarity S = [[1, 0.6], [0, 0.8]] times scale 2
    s = [[2.0, 1.2], [0.0, 1.6]]
    row = -math.log(math.exp(s[0][0]) / (math.exp(s[0][0]) + math.exp(s[0][1]))) - math.log(
        math.exp(s[1][1]) / (math.exp(s[1][0]) + math.exp(s[1][1]))
    )
    col = -math.log(math.exp(s[0][0]) / (math.exp(s[0][0]) + math.exp(s[1][0]))) - math.log(
        math.exp(s[1][1]) / (math.exp(s[0][1]) + math.exp(s[1][1]))
    )
    expected = 0.5 * (row / 2 + col / 2)
    loss = clip_contrastive_loss(image, text, torch.tensor(2.0))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # matched pairs give the lowest loss; swapping the reports raises it
    assert clip_contrastive_loss(image, text.flip(0), 2.0).item() > loss.item()
    aligned = clip_contrastive_loss(image, image, 2.0).item()
    assert aligned < loss.item()


def test_info_nce_uses_present_pairs_only():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    present = torch.tensor([True, False, True, True, False])
    torch.testing.assert_close(
        clip_contrastive_loss(image, text, 3.0, present),
        clip_contrastive_loss(image[present], text[present], 3.0),
    )
    image.requires_grad_(True)
    one = clip_contrastive_loss(image, text, 3.0, torch.tensor([True, False, False, False, False]))
    assert one.item() == 0.0
    one.backward()  # still part of the graph
    assert torch.count_nonzero(image.grad) == 0


# --- missing reports ----------------------------------------------------------------------


def test_missing_reports_use_the_learned_embedding_and_are_left_out_of_clip():
    method = make()
    inputs, labels = batch(4)
    present = torch.tensor([True, False, True, True])
    inputs["report_text_present"] = present
    model = method.model.eval()
    with torch.no_grad():
        out = model(inputs)
        assert out["text_present"].tolist() == present.tolist()
        assert torch.all(out["text_embeds"][1] == 0)
        # the absent report's tokens do not matter ...
        other = dict(inputs, report_text=inputs["report_text"].clone())
        other["report_text"][1] = 5.0
        torch.testing.assert_close(model(other)["logits"], out["logits"])
        # ... the missing-report embedding does, for that sample only
        method.head.missing_text.fill_(1.0)
        moved = model(inputs)["logits"]
        assert not torch.allclose(moved[1], out["logits"][1])
        torch.testing.assert_close(moved[[0, 2, 3]], out["logits"][[0, 2, 3]])
        method.head.missing_text.zero_()
    terms = method.loss_terms(out, labels)
    expected = clip_contrastive_loss(
        out["image_embeds"][present], out["text_embeds"][present], out["logit_scale"]
    )
    torch.testing.assert_close(terms["contrastive"], expected)
    # the missing embedding trains (head group), in frozen-projection mode too
    fpm = make("frozen_projection")
    fpm.loss(fpm.model(inputs), labels).backward()
    assert fpm.head.missing_text.grad is not None and fpm.head.missing_text.grad.abs().sum() > 0


def test_all_padding_or_absent_reports_count_as_missing():
    method = make()
    inputs, labels = batch(3)
    inputs["report_text_mask"] = inputs["report_text_mask"].clone()
    inputs["report_text_mask"][2] = False
    method.model.eval()
    with torch.no_grad():
        assert method.model(inputs)["text_present"].tolist() == [True, True, False]
        no_text = {"image": inputs["image"]}
        out = method.model(no_text)
        assert not out["text_present"].any() and out["logits"].shape == (3, 1)
        assert method.loss_terms(out, labels)["contrastive"].item() == 0.0


# --- saving -------------------------------------------------------------------------------


def test_trainable_state_saves_alone_and_loads(tmp_path):
    method = make("frozen_projection", seed=1)
    inputs, labels = batch(4)
    optimiser = method.optimizer()
    method.loss(method.model(inputs), labels).backward()
    optimiser.step()
    files = method.save_adapters(tmp_path)
    assert [f.name for f in files] == ["brain_adapter.pt"]
    state = method.adapter_state_dict()
    assert not any(k.startswith("vit.") for k in state)
    assert sum(v.numel() for v in state.values()) == (
        adapter_params_closed_form() + PROJECTIONS + LOGIT_SCALE + HEAD
    )
    assert files[0].stat().st_size < 4 * vit_params_closed_form()  # far below the ViT's size
    # a fresh method on the same (frozen, pretrained) ViT, other random adapter/projections
    fresh = make("frozen_projection", seed=2)
    fresh.model.vit.load_state_dict(method.model.vit.state_dict())
    fresh.load_adapters(tmp_path)
    method.model.eval(), fresh.model.eval()
    with torch.no_grad():
        a, b = method.model(inputs), fresh.model(inputs)
    torch.testing.assert_close(a["logits"], b["logits"])
    torch.testing.assert_close(a["text_embeds"], b["text_embeds"])
    with pytest.raises(InputError, match="embed_dim differ"):
        make("frozen_projection", embed_dim=4).load_adapters(tmp_path)
    with pytest.raises(InputError, match="not found"):
        fresh.load_adapters(tmp_path / "elsewhere")


# --- inputs and errors ----------------------------------------------------------------------


def test_image_keys_are_concatenated_in_order():
    method = make(image_keys=("fa", "md"))
    assert method.modalities == ("fa", "md", "report_text")
    inputs, _ = batch(2)
    image = inputs.pop("image")
    split = dict(inputs, fa=image[:, :1], md=image[:, 1:])
    stacked = make(image_keys=("image",))
    stacked.model.load_state_dict(method.model.state_dict())
    method.model.eval(), stacked.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            method.model(split)["logits"], stacked.model(dict(inputs, image=image))["logits"]
        )
    with pytest.raises(KeyError, match=r"missing \['md'\]"):
        method.model(dict(inputs, fa=image[:, :1]))


def test_clear_errors():
    method = make()
    inputs, _ = batch(2)
    with pytest.raises(ValueError, match=r"takes volumes \(B, 2, X, Y, Z\), got \(2, 3, "):
        method.model(dict(inputs, image=torch.randn(2, 3, 8, 8, 8)))
    with pytest.raises(ValueError, match=r"report_text must be token embeddings .*text_dim"):
        method.model(dict(inputs, report_text=torch.randn(2, 3, TEXT_DIM + 1)))
    with pytest.raises(ValueError, match="mode must be one of"):
        make("frozen")
    with pytest.raises(TypeError, match="needs a ViT backbone"):
        BrainAdapter(nn.Linear(2, 2))
