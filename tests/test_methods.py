"""Backbones, checkpoint loading and adaptation methods on tiny 3D ResNets (CPU, seconds)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from neuroadapt.errors import InputError
from neuroadapt.methods import available_methods, get_method
from neuroadapt.models import (
    Classifier,
    ResNetBackbone,
    ViTBackbone,
    get_backbone,
    load_pretrained,
)
from neuroadapt.models.backbones import sha256_of

torch.set_num_threads(2)

SHAPE = (2, 2, 24, 24, 24)  # (B, C, X, Y, Z): batch 2 so BatchNorm trains on a 1x1x1 map


def tiny(in_channels: int = 2) -> ResNetBackbone:
    """ResNet-10 at width 1/8: stages of 8, 16, 32, 64 channels, 64-d features."""
    return ResNetBackbone(10, in_channels=in_channels, widen_factor=0.125)


@pytest.fixture
def backbone() -> ResNetBackbone:
    torch.manual_seed(0)
    return tiny()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(1))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def convs(module: nn.Module) -> list[nn.Conv3d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv3d)]


def lora_params(conv: nn.Conv3d, r: int) -> int:
    """A: r x d_in k^3 (full input channels), B: d_out x r / groups (peft's 1x1x1 conv)."""
    k3 = math.prod(conv.kernel_size)
    return r * conv.in_channels * k3 + conv.out_channels * r // conv.groups


def mlp_head_params(f: int, hidden: int = 128, out: int = 1) -> int:
    return f * hidden + hidden + hidden * out + out


# --- backbones --------------------------------------------------------------------------


def test_registry_and_random_init_warns_loudly():
    with pytest.warns(UserWarning, match="NO PRETRAINED WEIGHTS"):
        b = get_backbone("resnet10_w025", in_channels=3)
    assert b.net.conv1.in_channels == 3 and b.feature_dim == 128
    with pytest.raises(KeyError, match="resnet50_w2"):
        get_backbone("resnet51")


def test_paper_backbone_architecture_without_building_weights():
    """resnet50_w2 is the CT foundation model: 4096-d, stem stride 2, 53 convs, biased shortcuts."""
    b = ResNetBackbone(50, in_channels=1, widen_factor=2.0)
    assert b.feature_dim == 4096
    assert b.net.conv1.stride == (2, 2, 2) and b.net.conv1.out_channels == 128
    cs = convs(b)
    assert len(cs) == 53
    assert sum(c.bias is not None for c in cs) == 4  # one downsample conv per stage
    assert n_params(b) == 184_477_824  # trunk size of the published model (facts.md)


def test_forward_features_match_monai_forward(backbone, x):
    backbone.eval()
    out = backbone.forward_features(x)
    torch.testing.assert_close(out.pooled, backbone(x))
    assert out.pooled.shape == (2, 64)
    assert [tuple(h.shape[1:]) for h in out.hidden_states] == [
        (8, 6, 6, 6),
        (16, 3, 3, 3),
        (32, 2, 2, 2),
        (64, 1, 1, 1),
    ]


def tiny_vit(in_channels: int = 2) -> ViTBackbone:
    """16^3 input, patch 8 (8 tokens), 32-d, 2 blocks of 2 heads."""
    return ViTBackbone(
        in_channels, (16, 16, 16), (8, 8, 8), 32, mlp_dim=64, num_layers=2, num_heads=2
    )


def test_vit_backbone_tokens_and_pooled_features():
    torch.manual_seed(0)
    vit = tiny_vit().eval()
    x = torch.randn(2, 2, 16, 16, 16)
    out = vit.forward_features(x)
    torch.testing.assert_close(out.pooled, vit(x))
    # MONAI's own forward gives the same final tokens
    torch.testing.assert_close(vit.forward_tokens(vit.embed(x)), vit.net(x)[0])
    assert vit.embed(x).shape == (2, 8, 32) and vit.num_patches == 8
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 8, 32)] * 2
    assert vit.lora_targets() == [
        f"net.blocks.{i}.attn.{layer}" for i in range(2) for layer in ("out_proj", "qkv")
    ]
    with pytest.raises(ValueError, match=r"takes \(16, 16, 16\) volumes, got \(24, 24, 24\)"):
        vit(torch.randn(1, 2, 24, 24, 24))
    with pytest.warns(UserWarning, match="NO PRETRAINED WEIGHTS"):
        b = get_backbone("vit_tiny", in_channels=2)  # registered like the ResNets
    assert b.feature_dim == 96 and b.num_patches == 64


def test_vit_checkpoint_loads_with_inflated_patch_embedding(tmp_path):
    torch.manual_seed(1)
    source = tiny_vit(1)
    path = tmp_path / "vit.pt"
    digest = _save(source.net.state_dict(), path)
    target = tiny_vit(2)
    load_pretrained(target, path, digest)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():  # the same image in both channels: the 1-channel network's response
        torch.testing.assert_close(target.eval()(x.repeat(1, 2, 1, 1, 1)), source.eval()(x))


def test_lora_on_a_vit_adapts_attention_and_merges():
    torch.manual_seed(2)
    vit = tiny_vit()
    total = n_params(vit)
    method = get_method("lora")(vit, r=2)
    d = 32  # qkv: d -> 3d, out_proj: d -> d; LoRA adds r (d_in + d_out) to each
    adapters = 2 * (2 * (d + 3 * d) + 2 * (d + d))
    report = method.parameter_report()
    assert report.trainable == adapters + mlp_head_params(d)
    assert report.total == total + adapters + mlp_head_params(d)
    randomise_adapters(method)
    method.model.eval()
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            method.merged_model().eval()(x), method.model(x), atol=1e-5, rtol=1e-4
        )


# --- checkpoint loader -----------------------------------------------------------------


def _save(obj, path: Path) -> str:
    torch.save(obj, path)
    return sha256_of(path)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"trunk_state_dict": {f"trunk.{k}": v for k, v in sd.items()}, "epoch": 3},
        lambda sd: {"state_dict": {f"module.trunk.{k}": v for k, v in sd.items()}},
    ],
    ids=["bare", "state_dict/module.", "trunk_state_dict/trunk.", "module.trunk."],
)
def test_checkpoint_forms_load(tmp_path, wrap):
    torch.manual_seed(3)
    source = tiny(1)
    path = tmp_path / "w.pt"
    digest = _save(wrap(source.net.state_dict()), path)
    torch.manual_seed(4)
    target = tiny(1)
    assert load_pretrained(target, path, digest) == []
    for (name, a), b in zip(
        source.net.state_dict().items(), target.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_checksum_mismatch_names_file_and_fix(tmp_path):
    path = tmp_path / "fm.pt"
    _save(tiny(1).net.state_dict(), path)
    with pytest.raises(InputError) as caught:
        load_pretrained(tiny(1), path, "0" * 64)
    message = str(caught.value)
    assert str(path) in message and "SHA-256 checksum mismatch" in message
    assert "Fix: download the checkpoint again" in message
    with pytest.raises(InputError, match="no SHA-256 checksum"):
        get_backbone("resnet10_w025", weights=path)


def test_checkpoint_of_other_architecture_is_refused(tmp_path):
    path = tmp_path / "r10.pt"
    digest = _save(tiny(1).net.state_dict(), path)
    with pytest.raises(InputError, match="48 missing, 0 of other shape") as caught:
        load_pretrained(ResNetBackbone(18, 1, widen_factor=0.125), path, digest)
    assert "missing layer1.1.conv1.weight" in caught.value.details
    wide = tmp_path / "wide.pt"
    digest = _save(ResNetBackbone(10, 1, widen_factor=0.25).net.state_dict(), wide)
    with pytest.raises(InputError, match="of other shape"):
        load_pretrained(tiny(1), wide, digest)


def test_unused_tensors_are_reported(tmp_path):
    sd = dict(tiny(1).net.state_dict())
    sd["projection.weight"] = torch.zeros(3, 3)
    path = tmp_path / "simclr.pt"
    digest = _save({"state_dict": sd}, path)
    with pytest.warns(UserWarning, match="1 checkpoint tensors not used"):
        assert load_pretrained(tiny(1), path, digest) == ["projection.weight"]


def test_stem_inflation_keeps_response_to_repeated_channels(tmp_path):
    torch.manual_seed(5)
    source = tiny(1).eval()
    path = tmp_path / "ct.pt"
    digest = _save({"trunk_state_dict": source.net.state_dict()}, path)
    inflated = tiny(3)
    load_pretrained(inflated, path, digest)
    inflated.eval()
    w1, w3 = source.net.conv1.weight, inflated.net.conv1.weight
    assert w3.shape == (8, 3, 7, 7, 7)
    torch.testing.assert_close(w3.sum(dim=1, keepdim=True), w1)
    torch.testing.assert_close(w3[:, 0], w3[:, 2])
    one = torch.randn(2, 1, 24, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(inflated(one.repeat(1, 3, 1, 1, 1)), source(one))


# --- methods: counts, groups, equivalences -----------------------------------------------


def test_the_train_rules_image_methods_are_the_single_backbone_ones():
    from neuroadapt.experiments import IMAGE_METHODS
    from neuroadapt.methods import AdaptationMethod

    single = {
        name for name in available_methods() if issubclass(get_method(name), AdaptationMethod)
    }
    assert single == IMAGE_METHODS


def test_the_train_rules_ct_pet_methods_are_those_declaring_only_ct_and_pet():
    # the text/tabular methods declare no fixed modalities: their encoders decide
    from neuroadapt.experiments import SEGMENTATION_SURVIVAL_METHODS
    from neuroadapt.methods import MultimodalMethod

    ct_pet = {
        name
        for name in available_methods()
        if issubclass(get_method(name), MultimodalMethod)
        and 0 < len(get_method(name).modalities)
        and set(get_method(name).modalities) <= {"ct", "pet"}
    }
    assert ct_pet == SEGMENTATION_SURVIVAL_METHODS


def test_all_methods_registered():
    assert available_methods() == [
        "anchored_qformer",
        "brain_adapter",
        "ct_only",
        "dora",
        "early_fusion",
        "feature_concat",
        "full_finetune",
        "late_fusion",
        "linear_probe",
        "lora",
        "molre",
        "pemma",
        "scratch",
        "unimodal_clinical",
        "unimodal_genetics",
        "unimodal_image",
        "unimodal_report_text",
    ]
    with pytest.raises(KeyError, match="available: anchored_qformer"):
        get_method("qlora")


@pytest.mark.parametrize("name", ["lora", "dora"])
@pytest.mark.parametrize("r", [1, 4])
def test_lora_dora_parameter_counts_are_closed_form(backbone, name, r):
    base_total = n_params(backbone)
    layers = convs(backbone)
    adapters = sum(lora_params(c, r) for c in layers)
    if name == "dora":
        adapters += sum(c.out_channels for c in layers)  # one magnitude per output channel
    head = mlp_head_params(64)
    method = get_method(name)(backbone, r=r)
    report = method.parameter_report()
    assert report.trainable == adapters + head
    assert report.total == base_total + adapters + head
    assert report.percent == pytest.approx(100 * (adapters + head) / (base_total + adapters + head))
    assert sum(p.numel() for p in method.adapter_parameters()) == adapters
    groups = method.param_groups()
    assert [(g["name"], g["lr"]) for g in groups] == [("adapters", 1e-4), ("head", 1e-5)]
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in method.model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable


def test_lora_counts_grouped_and_biased_convs():
    """Grouped conv: B is r -> d_out with groups (d_out*r/groups); base bias is frozen, no LoRA bias."""
    net = nn.Sequential(nn.Conv3d(4, 8, 3, groups=2, bias=True), nn.Conv3d(8, 6, 1))
    net.feature_dim = 6
    with pytest.warns(UserWarning, match="groups > 1"):
        method = get_method("lora")(net, r=4, target_modules=["0", "1"])
    expected = 4 * (4 * 27) + 8 * 4 // 2 + 4 * (8 * 1) + 6 * 4
    assert sum(p.numel() for p in method.adapter_parameters()) == expected
    base = (8 * 2 * 27 + 8) + (6 * 8 + 6)  # grouped weight (d_out, d_in/groups, k^3) + biases
    head = mlp_head_params(6)
    assert method.parameter_report().total == base + expected + head
    assert method.parameter_report().trainable == expected + head


@pytest.mark.parametrize(
    ("name", "trainable_backbone", "head"),
    [
        ("linear_probe", False, 64 * 1 + 1),
        ("full_finetune", True, mlp_head_params(64)),
        ("scratch", True, mlp_head_params(64)),
    ],
)
def test_baseline_parameter_counts(backbone, name, trainable_backbone, head):
    base = n_params(backbone)
    report = get_method(name)(backbone).parameter_report()
    assert report.total == base + head
    assert report.trainable == (base if trainable_backbone else 0) + head


def test_scratch_redraws_weights(backbone):
    before = backbone.net.conv1.weight.detach().clone()
    get_method("scratch")(backbone, seed=7)
    assert not torch.equal(before, backbone.net.conv1.weight)


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_zero_initialised_adapters_reproduce_backbone(backbone, x, name):
    reference = copy.deepcopy(backbone)
    method = get_method(name)(backbone)
    plain = Classifier(reference, copy.deepcopy(method.head)).eval()
    method.model.eval()
    assert all(torch.count_nonzero(m.lora_B["default"].weight) == 0 for m in lora_layers(method))
    with torch.no_grad():
        torch.testing.assert_close(method.model(x), plain(x), rtol=1e-5, atol=1e-6)


def lora_layers(method) -> list[LoraLayer]:
    return [m for m in method.model.modules() if isinstance(m, LoraLayer)]


def bn_modules(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", ["lora", "dora", "linear_probe"])
def test_step_changes_only_trainable_parts(backbone, x, name):
    method = get_method(name)(backbone)
    model = method.model.train()
    assert all(not m.training for m in bn_modules(model.backbone))  # frozen BN kept in eval
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    trainable = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    optimizer = method.optimizer()
    y = torch.tensor([0.0, 1.0])
    for _ in range(2):  # two steps: with B = 0 the first step gives A no gradient
        optimizer.zero_grad()
        method.loss(model(x), y).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert frozen and all(torch.equal(v, params[k]) for k, v in frozen.items())
    assert all(torch.equal(v, dict(model.named_buffers())[k]) for k, v in buffers.items())
    changed = [k for k, v in trainable.items() if not torch.equal(v, params[k])]
    assert sorted(changed) == sorted(trainable)


def test_full_finetune_updates_batchnorm_statistics(backbone, x):
    method = get_method("full_finetune")(backbone)
    model = method.model.train()
    assert all(m.training for m in bn_modules(model))
    before = model.backbone.net.bn1.running_mean.clone()
    method.loss(model(x), torch.tensor([0.0, 1.0])).backward()
    assert not torch.equal(before, model.backbone.net.bn1.running_mean)


def randomise_adapters(method) -> None:
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in method.adapter_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_manual_merge_matches_unmerged(backbone, x, name):
    reference = copy.deepcopy(backbone)
    method = get_method(name)(backbone)
    randomise_adapters(method)
    method.model.eval()
    merged = method.merged_model().eval()
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert n_params(merged) == n_params(reference) + mlp_head_params(64)  # a plain network
    with torch.no_grad():
        unmerged_out = method.model(x)
        torch.testing.assert_close(merged(x), unmerged_out, rtol=1e-4, atol=1e-5)
        # the adapters matter: the result differs from the backbone without them
        plain = Classifier(reference.eval(), method.head)
        assert (plain(x) - unmerged_out).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_adapters_save_and_load_alone(tmp_path, backbone, x, name):
    base_weights = copy.deepcopy(backbone.state_dict())
    method = get_method(name)(backbone)
    randomise_adapters(method)
    files = method.save_adapters(tmp_path)
    names = {f.name for f in files}  # peft also writes a README.md model card
    assert {"adapter_config.json", "adapter_model.safetensors", "head.pt"} <= names
    assert names <= {"adapter_config.json", "adapter_model.safetensors", "head.pt", "README.md"}
    adapter_bytes = (tmp_path / "adapter_model.safetensors").stat().st_size
    n_adapter = sum(p.numel() for p in method.adapter_parameters())
    assert 4 * n_adapter <= adapter_bytes < 4 * n_adapter + 64 * 1024  # float32 adapters + header
    assert adapter_bytes < 0.2 * 4 * n_params(backbone.net)  # well below the backbone

    fresh_backbone = tiny()
    fresh_backbone.load_state_dict(base_weights)
    fresh = get_method(name)(fresh_backbone)
    fresh.load_adapters(tmp_path)
    method.model.eval()
    fresh.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.model(x), method.model(x))


# --- training --------------------------------------------------------------------------

FAST = {
    "linear_probe": {"lr_head": 3e-2},
    "full_finetune": {"lr_backbone": 1e-3, "lr_head": 1e-3},
    "scratch": {"lr": 1e-3},
    "lora": {"lr_adapters": 1e-2, "lr_head": 1e-3},
    "dora": {"lr_adapters": 1e-2, "lr_head": 1e-3},
}


def train_losses(method, xb, y, steps: int = 6) -> list[float]:
    """Loss before each of ``steps`` optimiser steps on one batch."""
    optimizer = method.optimizer()
    model = method.model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = method.loss(model(xb), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", sorted(FAST))
def test_each_method_loss_drops_on_tiny_batch(name):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    xb = torch.randn(4, 2, 16, 16, 16, generator=gen) + y.view(-1, 1, 1, 1, 1)  # class shifts mean
    method = get_method(name)(tiny(), **FAST[name])
    losses = train_losses(method, xb, y)
    assert losses[-1] < 0.8 * losses[0], losses


# --- molre (paper 3) ----------------------------------------------------------------------


def molre_params(conv: nn.Conv3d, experts: int, r: int) -> int:
    """Per adapted conv: E experts of A (r x d_in k^3) and B (d_out x r), router d_in x E + E."""
    k3 = math.prod(conv.kernel_size)
    return experts * (r * conv.in_channels * k3 + conv.out_channels * r) + (
        conv.in_channels * experts + experts
    )


@pytest.mark.parametrize(("experts", "r"), [(1, 1), (4, 4)])
def test_molre_parameter_counts_are_closed_form(backbone, experts, r):
    layers = convs(backbone)
    total_backbone = n_params(backbone)
    method = get_method("molre")(
        backbone, num_classes=5, experts=experts, r=r, target_modules="all"
    )
    report = method.parameter_report()
    added = sum(molre_params(conv, experts, r) for conv in layers)
    head = mlp_head_params(backbone.feature_dim, out=5)
    assert report.trainable == added + head
    assert report.total == total_backbone + added + head
    assert len(method.layers) == len(layers)


def test_molre_adds_under_half_a_percent_on_the_paper_backbone():
    """Paper 3's budget, < 0.5% added parameters, with MoLRE's own defaults (4 experts of
    rank 2 on the pointwise convs) on the CT foundation model's ResNet-50 x2: the real method
    built on the meta device (shapes only), its count checked against the closed form."""
    from neuroadapt.models.backbones import resnet50_w2

    with torch.device("meta"):
        size = n_params(resnet50_w2())
        method = get_method("molre")(resnet50_w2(), task="binary")
    assert (method.experts, method.r, len(method.layers)) == (4, 2, 36)
    added = sum(molre_params(layer.base, method.experts, method.r) for layer in method.layers)
    head = mlp_head_params(4096, out=1)
    report = method.parameter_report()
    assert report.trainable == added + head
    assert all(tuple(layer.base.kernel_size) == (1, 1, 1) for layer in method.layers)
    print(f"MoLRE on ResNet-50 x2: 36 layers, {added:,} added, {100 * added / size:.3f}%")
    assert added < 0.005 * size
    with pytest.raises(ValueError, match="no layer matching target_modules=\\[\\]"):
        get_method("molre")(tiny(), target_modules=[])


def test_molre_auto_adapts_every_conv_of_a_basic_block_resnet():
    """resnet18_w05 (the demo's) has basic blocks: pointwise convs only in its 3 shortcuts,
    so "auto" adapts every Conv3d there, as "all" does."""
    from neuroadapt.models.backbones import resnet18_w05

    with torch.device("meta"):
        auto = get_method("molre")(resnet18_w05(2), task="binary")
        pointwise = get_method("molre")(resnet18_w05(2), task="binary", target_modules="pointwise")
    assert len(auto.layers) == len(convs(resnet18_w05(2))) == 20
    assert len(pointwise.layers) == 3


def test_molre_starts_as_the_backbone_and_routes_softly(backbone, x):
    reference = copy.deepcopy(backbone)
    method = get_method("molre")(backbone, task="binary", target_modules="all")
    plain = Classifier(reference, copy.deepcopy(method.head)).eval()
    method.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.model(x), plain(x), rtol=1e-5, atol=1e-6)
        gates = method.layers[0].gates(x)
    assert gates.shape == (2, 4) and torch.allclose(gates.sum(-1), torch.ones(2))


def test_molre_equals_the_sum_of_its_experts(x):
    """The fused computation equals sum_e g_e B_e A_e x computed expert by expert."""
    from neuroadapt.methods.molre import MoLREConv3d

    torch.manual_seed(3)
    conv = nn.Conv3d(2, 6, 3, padding=1, stride=2)
    layer = MoLREConv3d(conv, experts=3, r=2, alpha=4.0)
    with torch.no_grad():
        for p in (layer.up.weight, layer.router.weight, layer.router.bias):
            p.normal_()
        gates = layer.gates(x)
        expected = conv(x)
        for e in range(3):
            down = nn.functional.conv3d(
                x, layer.down.weight[2 * e : 2 * e + 2], stride=2, padding=1
            )
            up = nn.functional.conv3d(down, layer.up.weight[:, 2 * e : 2 * e + 2])
            expected = expected + (4.0 / 2) * gates[:, e].view(-1, 1, 1, 1, 1) * up
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_molre_on_a_vit_adapts_attention_and_mlp_projections():
    """Paper 3 adapts transformers: on a ViT MoLRE wraps every Linear of the blocks (fused
    qkv, attention output, both MLP layers), counted in closed form, starts as the frozen
    ViT, and trains experts and routers of every one of them."""
    from neuroadapt.methods.molre import MoLRELinear

    torch.manual_seed(0)
    vit = tiny_vit()
    plain = copy.deepcopy(vit).eval()
    size = n_params(vit)
    method = get_method("molre")(vit, task="binary", experts=3, r=2)
    names = [n.rsplit(".", 1)[-1] for n in method.targets]
    assert sorted(set(names)) == ["linear1", "linear2", "out_proj", "qkv"]
    assert len(method.targets) == 8 and all(isinstance(m, MoLRELinear) for m in method.layers)
    # qkv 32->96, out_proj 32->32, linear1 32->64, linear2 64->32; per block
    per_block = sum(
        3 * 2 * (i + o) + 3 * (i + 1) for i, o in ((32, 96), (32, 32), (32, 64), (64, 32))
    )
    head = mlp_head_params(32, out=1)
    report = method.parameter_report()
    assert report.trainable == 2 * per_block + head
    assert report.total == size + 2 * per_block + head
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(method.model.backbone(x), plain(x), rtol=1e-5, atol=1e-5)
    method.loss(method.model.train()(x), torch.tensor([0.0, 1.0])).backward()
    for layer in method.layers:
        assert layer.up.weight.grad.abs().sum() > 0  # every expert set receives a gradient
        assert layer.base.weight.grad is None


def test_molre_linear_equals_the_sum_of_its_experts():
    from neuroadapt.methods.molre import MoLRELinear, molre_parameter_count

    torch.manual_seed(4)
    base = nn.Linear(6, 5)
    layer = MoLRELinear(base, experts=3, r=2, alpha=4.0)
    assert sum(p.numel() for p in layer.parameters() if p.requires_grad) == (
        molre_parameter_count(base, 3, 2)
    )
    tokens = torch.randn(2, 7, 6)
    with torch.no_grad():
        for p in (layer.up.weight, layer.router.weight, layer.router.bias):
            p.normal_()
        gates = torch.softmax(layer.router(tokens.mean(1)), -1)
        expected = base(tokens)
        for e in range(3):
            down = tokens @ layer.down.weight[2 * e : 2 * e + 2].T
            up = down @ layer.up.weight[:, 2 * e : 2 * e + 2].T
            expected = expected + 2.0 * gates[:, e].view(-1, 1, 1) * up
        torch.testing.assert_close(layer(tokens), expected, rtol=1e-5, atol=1e-5)


def test_molre_step_trains_experts_routers_and_head_only(backbone, x):
    method = get_method("molre")(backbone, num_classes=3, target_modules="all")
    model = method.model.train()
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    trainable = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    optimizer = method.optimizer()
    y = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    for _ in range(2):
        optimizer.zero_grad()
        method.loss(model(x), y).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert frozen and all(torch.equal(v, params[k]) for k, v in frozen.items())
    assert all(torch.equal(v, dict(model.named_buffers())[k]) for k, v in buffers.items())
    changed = {k for k, v in trainable.items() if not torch.equal(v, params[k])}
    assert changed == set(trainable)
    assert {g["name"] for g in method.param_groups()} == {"adapters", "head"}


def test_molre_multilabel_loss_drops_on_tiny_batch():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    xb = torch.randn(4, 2, 16, 16, 16, generator=gen) + y[:, :1].view(-1, 1, 1, 1, 1)
    method = get_method("molre")(
        tiny(), num_classes=2, target_modules="all", lr_adapters=1e-2, lr_head=1e-2
    )
    losses = train_losses(method, xb, y)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", ["lora", "dora", "molre"])
def test_train_norms_adds_every_batchnorm_scale_and_shift_to_the_adapters(backbone, x, name):
    norms = bn_modules(backbone)
    norm_params = sum(2 * m.num_features for m in norms)  # weight and bias per channel
    plain = get_method(name)(copy.deepcopy(backbone), task="binary")
    method = get_method(name)(backbone, task="binary", train_norms=True)
    added = method.parameter_report().trainable - plain.parameter_report().trainable
    assert added == norm_params
    adapters = {id(p) for p in method.adapter_parameters()}
    assert all(id(p) in adapters for m in norms for p in m.parameters())
    grouped = [id(p) for g in method.param_groups() for p in g["params"]]
    trainable = {id(p) for p in method.model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable
    # trained BatchNorm normalises with batch statistics in training, as full fine-tuning's
    model = method.model.train()
    assert all(m.training for m in bn_modules(model.backbone))
    before = norms[0].weight.detach().clone()
    optimizer = method.optimizer()
    for _ in range(2):
        optimizer.zero_grad()
        method.loss(model(x), torch.tensor([0.0, 1.0])).backward()
        optimizer.step()
    assert not torch.equal(before, norms[0].weight)
