"""PEMMA (paper 5) on a tiny Swin UNETR: the backbone wrapper, closed-form counts, equality
with the CT model at initialisation, frozen parts, single-modality inference, merging,
saving, training of PEMMA and both baselines, checkpoint loading and input errors (CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets import SwinUNETR
from test_pemma import (  # shared with the UNETR tests (tests/ is on sys.path)
    BOTH_ONLY,
    FAST,
    assert_loss_drops,
    lora_layers,
    n_params,
    randomise,
    synthetic_batch,
    volumes,
)
from torch import nn

from neuroadapt.methods.pemma import (
    CTOnly,
    EarlyFusion,
    Pemma,
    PemmaNet,
    PemmaSwinNet,
    SegmentationPrognosisNet,
)
from neuroadapt.methods.registry import get_method
from neuroadapt.models.backbones import get_backbone, load_pretrained, sha256_of
from neuroadapt.models.swin_unetr import SwinUNETRBackbone, swinunetr_ct, swinunetr_tiny
from neuroadapt.models.unetr import unetr_tiny

torch.set_num_threads(1)

SIZE = 32  # swinunetr_tiny: 32^3 input, feature size 12, depths (1, 1, 1, 1), batch norm
FS, DEPTHS = 12, (1, 1, 1, 1)
D = 16 * FS  # deepest Swin map: 192 channels


def swin_pemma_counts(
    fs: int, depths: tuple[int, ...], r: int, dora: bool, batch_norm: bool, hidden: int = 128
) -> dict[str, int]:
    """Closed-form trainable parameters of PEMMA on a 1-channel Swin UNETR, by part."""
    adapters = 0
    for stage, depth in enumerate(depths):
        d = fs * 2**stage  # token width of the stage
        per_block = r * (d + 3 * d) + r * (d + d)  # LoRA on attn.qkv (d -> 3d), attn.proj
        if dora:
            per_block += 3 * d + d  # one magnitude per output row of each adapted Linear
        adapters += depth * per_block
    return {
        "adapters": adapters,
        "input_adapter": 2 + 1,  # 1x1x1 conv, 2 -> 1 channel, with bias
        # encoder1 copy: conv 3^3 (1 -> fs), conv 3^3 (fs -> fs), 1x1 residual (1 -> fs), no
        # biases; three norms, affine only for batch norm (MONAI's instance norm has none)
        "pet_skip": fs * 27 + fs * fs * 27 + fs + (3 * 2 * fs if batch_norm else 0),
        "beta": 1,
        "head": 16 * fs * hidden + hidden + hidden,  # no output bias (Cox is shift-free)
    }


def tiny(**kwargs) -> SwinUNETRBackbone:
    torch.manual_seed(0)
    return swinunetr_tiny(**kwargs)


# --- backbone -------------------------------------------------------------------------


def test_swin_pieces_chain_to_monai_forward_and_targets():
    backbone = tiny().eval()
    ct, _ = volumes()
    with torch.no_grad():
        segmentation, pooled = backbone.segment_and_pool(ct)
        torch.testing.assert_close(segmentation, backbone.net(ct))
        features = backbone.forward_features(ct)
    assert segmentation.shape == (2, 1, SIZE, SIZE, SIZE) and pooled.shape == (2, D)
    assert [h.shape[1] for h in features.hidden_states] == [FS * 2**i for i in range(5)]
    assert features.hidden_states[-1].shape[2:] == (1, 1, 1)  # 32^3 / 32
    torch.testing.assert_close(features.pooled, pooled)
    assert backbone.stem_key in backbone.net.state_dict()
    targets = backbone.lora_targets()
    assert len(targets) == 2 * sum(DEPTHS)
    assert all(isinstance(backbone.get_submodule(t), nn.Linear) for t in targets)
    assert {".".join(t.split(".")[-2:]) for t in targets} == {"attn.qkv", "attn.proj"}


def test_swin_backbones_registered():
    with pytest.warns(UserWarning, match="NO PRETRAINED WEIGHTS"):
        backbone = get_backbone("swinunetr_tiny")
    assert isinstance(backbone, SwinUNETRBackbone) and backbone.img_size == (SIZE,) * 3
    assert backbone.feature_dim == D


def test_bare_monai_swinunetr_checkpoint_loads(tmp_path):
    """A checkpoint of MONAI's SwinUNETR itself (DataParallel prefix, under "state_dict")
    loads into the wrapper through the checksum-checked loader."""
    config = tiny().config
    torch.manual_seed(7)
    bare = SwinUNETR(
        in_channels=1,
        out_channels=1,
        feature_size=config["feature_size"],
        depths=config["depths"],
        num_heads=config["num_heads"],
        window_size=config["window_size"],
        norm_name=config["norm_name"],
    )
    path = tmp_path / "swinunetr.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in bare.state_dict().items()}}, path)
    target = swinunetr_tiny()
    assert load_pretrained(target, path, sha256_of(path)) == []
    for key, value in bare.state_dict().items():
        assert torch.equal(value, target.net.state_dict()[key]), key


def test_paper_size_pemma_swin_share_of_early_fusion():
    """swinunetr_ct: 96^3, feature size 48 (62.2 M parameters). PEMMA-Swin (r=8) counted on
    the real model; early fusion in closed form (the CT net + a second input channel)."""
    ct = swinunetr_ct()
    base = n_params(ct)
    assert ct.feature_dim == 768 and ct.img_size == (96, 96, 96)
    method = Pemma(ct)
    parts = swin_pemma_counts(48, (2, 2, 2, 2), 8, dora=False, batch_norm=False)
    report = method.parameter_report()
    assert report.trainable == sum(parts.values()) and report.total == base + report.trainable
    head = parts["head"]
    early = base + 48 * 2**3 + 48 * 27 + 48 + head  # patch kernel, encoder1 conv1 and conv3
    share = report.trainable / early
    print(
        f"swinunetr_ct {base:,} params; PEMMA-Swin trains {report.trainable:,} "
        f"({parts}) = {100 * share:.2f}% of early fusion's {early:,}"
    )
    assert share < 0.01


# --- pemma on swin: counts, equivalence, frozen parts -----------------------------------


@pytest.mark.parametrize(("r", "dora"), [(4, False), (8, True)])
def test_pemma_swin_parameter_counts_are_closed_form(r, dora):
    backbone = tiny()
    base = n_params(backbone)
    method = Pemma(backbone, r=r, use_dora=dora)
    assert isinstance(method.model, PemmaSwinNet)
    parts = swin_pemma_counts(FS, DEPTHS, r, dora, batch_norm=True)
    trainable = sum(parts.values())
    report = method.parameter_report()
    assert report.trainable == trainable
    assert report.total == base + trainable
    assert report.percent == pytest.approx(100 * trainable / (base + trainable))
    assert sum(p.numel() for p in method.adapter_parameters()) == parts["adapters"]
    pet = parts["input_adapter"] + parts["pet_skip"] + parts["beta"]
    assert sum(p.numel() for p in method.pet_parameters()) == pet
    groups = method.param_groups()
    assert [g["name"] for g in groups] == ["adapters", "pet_pathway", "head"]
    grouped = [id(p) for g in groups for p in g["params"]]
    wanted = {id(p) for p in method.model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == wanted


@pytest.mark.parametrize("dora", [False, True])
def test_pemma_swin_equals_ct_model_at_init(dora):
    backbone = tiny()
    reference = copy.deepcopy(backbone).eval()
    method = Pemma(backbone, use_dora=dora)
    model = method.model.eval()
    adapter = model.input_adapter
    assert adapter.weight.flatten().tolist() == [1.0, 0.0] and adapter.bias.item() == 0.0
    assert all(torch.count_nonzero(m.lora_B["default"].weight) == 0 for m in lora_layers(model))
    ct, pet = volumes()
    with torch.no_grad():
        expected, pooled = reference.segment_and_pool(ct)
        out = model({"ct": ct})
        # PET reaches the frozen Swin only through the adapter (PET weight 0) and the skip
        # path (beta 0): with both images the initial model is still the CT model
        both = model({"ct": ct, "pet": pet})
    torch.testing.assert_close(out["segmentation"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both["segmentation"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["risk"], method.head(pooled).squeeze(-1))
    assert out["risk"].shape == (2,)


def test_swin_step_changes_only_trainable_parts_and_keeps_norm_statistics():
    """swinunetr_tiny uses batch norm: frozen running statistics exist and must not move."""
    method = Pemma(tiny(), modality_dropout=BOTH_ONLY, lr_adapters=1e-2)
    model = method.model.train()
    frozen_bn = [
        m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    assert frozen_bn and all(not m.training for m in frozen_bn)
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.clone() for k, v in model.backbone.named_buffers()}
    trainable = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    optimizer = method.optimizer(weight_decay=0.0)  # so only a gradient can move a weight
    inputs, target = synthetic_batch(2)
    for _ in range(2):  # with B = 0 and beta = 0 the first step leaves A and z_P gradient-free
        optimizer.zero_grad()
        method.loss(model(inputs), target).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert frozen and all(torch.equal(v, params[k]) for k, v in frozen.items())
    after = dict(model.backbone.named_buffers())
    assert buffers and all(torch.equal(v, after[k]) for k, v in buffers.items())
    unchanged = sorted(k for k, v in trainable.items() if torch.equal(v, params[k]))
    assert unchanged == []
    assert model.beta.item() != 0.0 and model.input_adapter.weight[0, 1].item() != 0.0


# --- single-modality inference on both families -------------------------------------------


@pytest.mark.parametrize("factory", [unetr_tiny, swinunetr_tiny], ids=["unetr", "swin"])
def test_single_modality_inference_and_mixed_batches(factory):
    torch.manual_seed(0)
    method = Pemma(factory())
    assert isinstance(method.model, PemmaSwinNet if factory is swinunetr_tiny else PemmaNet)
    randomise([p for p in method.model.parameters() if p.requires_grad])
    with torch.no_grad():
        method.model.beta.fill_(0.5)
    model = method.model.eval()
    ct, pet = volumes(3)
    with torch.no_grad():
        for inputs in ({"ct": ct}, {"pet": pet}, {"ct": ct, "pet": pet}):
            out = model(inputs)
            assert out["segmentation"].shape == (3, 1, SIZE, SIZE, SIZE)
            assert out["risk"].shape == (3,) and torch.isfinite(out["risk"]).all()
        mixed = model(
            {
                "ct": ct,
                "pet": pet,
                "ct_present": torch.tensor([True, False, True]),
                "pet_present": torch.tensor([True, True, False]),
            }
        )
        alone = [
            model({"ct": ct[:1], "pet": pet[:1]}),
            model({"pet": pet[1:2]}),
            model({"ct": ct[2:]}),
        ]
    for key in ("segmentation", "risk"):
        torch.testing.assert_close(mixed[key], torch.cat([a[key] for a in alone]))


# --- merging and saving -------------------------------------------------------------------


@pytest.mark.parametrize("dora", [False, True])
def test_swin_merged_equals_unmerged(dora):
    backbone = tiny()
    reference = copy.deepcopy(backbone).eval()
    method = Pemma(backbone, use_dora=dora)
    randomise([p for p in method.model.parameters() if p.requires_grad])
    with torch.no_grad():
        method.model.beta.fill_(0.3)
    model = method.model.eval()
    merged = method.merged_model().eval()
    assert not lora_layers(merged) and isinstance(merged.segmenter, SwinUNETRBackbone)
    parts = swin_pemma_counts(FS, DEPTHS, 8, dora, batch_norm=True)
    assert n_params(merged) == n_params(reference) + sum(parts.values()) - parts["adapters"]
    ct, pet = volumes()
    with torch.no_grad():
        for inputs in ({"ct": ct}, {"ct": ct, "pet": pet}, {"pet": pet}):
            a, b = merged(inputs), model(inputs)
            for key in ("segmentation", "risk"):
                torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
        # the adapters matter: CT-only output now differs from the frozen backbone
        assert (model({"ct": ct})["segmentation"] - reference(ct)).abs().max() > 1e-3


def test_swin_adapters_save_and_load_alone(tmp_path):
    backbone = tiny()
    base_weights = copy.deepcopy(backbone.state_dict())
    method = Pemma(backbone, modality_dropout=BOTH_ONLY)
    randomise([p for p in method.model.parameters() if p.requires_grad])
    ct, pet = volumes()
    with torch.no_grad():  # a train-mode pass moves the PET skip copy's batch-norm statistics
        method.model.train()({"ct": ct, "pet": pet})
    assert "pet_skip.layer.norm1.running_mean" in method.trainable_state_dict()
    files = method.save_adapters(tmp_path)
    assert '"backbone_family": "swin_unetr"' in files[0].read_text()

    fresh_backbone = swinunetr_tiny()
    fresh_backbone.load_state_dict(base_weights)
    fresh = Pemma(fresh_backbone)
    fresh.load_adapters(tmp_path)
    method.model.eval()
    fresh.model.eval()
    with torch.no_grad():
        for inputs in ({"ct": ct, "pet": pet}, {"pet": pet}, {"ct": ct}):
            a, b = fresh.model(inputs), method.model(inputs)
            for key in ("segmentation", "risk"):
                torch.testing.assert_close(a[key], b[key])
    with pytest.raises(ValueError, match="adapters do not fit"):
        Pemma(unetr_tiny()).load_adapters(tmp_path)


# --- baselines on swin ----------------------------------------------------------------------


def test_swin_early_fusion_counts_and_inflated_inputs():
    backbone = tiny()
    reference = copy.deepcopy(backbone).eval()
    method = EarlyFusion(backbone)
    assert isinstance(method.model, SegmentationPrognosisNet)
    assert isinstance(method.model.backbone, SwinUNETRBackbone)
    head = D * 128 + 128 + 128
    extra_channel = FS * 2**3 + FS * 27 + FS  # patch kernel, encoder1 conv1 and conv3
    report = method.parameter_report()
    assert report.total == report.trainable == n_params(reference) + extra_channel + head
    ct, _ = volumes()
    with torch.no_grad():  # CT in both channels responds like CT in the CT model
        out = method.model.eval()({"ct": ct, "pet": ct})
    torch.testing.assert_close(out["segmentation"], reference(ct), rtol=1e-4, atol=1e-5)
    assert n_params(backbone) == n_params(reference)  # the CT backbone was not modified

    ct_only = CTOnly(tiny())
    assert ct_only.parameter_report().trainable == n_params(reference) + head


@pytest.mark.parametrize("name", sorted(FAST))
def test_each_method_loss_drops_on_swin(name):
    assert_loss_drops(get_method(name)(tiny(), **FAST[name]))


# --- bad input -----------------------------------------------------------------------------


def test_swin_bad_inputs_give_clear_errors():
    model = Pemma(tiny()).model.eval()
    wrong = torch.randn(1, 1, 64, 64, 64)  # a valid Swin size, but not the configured one
    with pytest.raises(ValueError, match=r"ct: expected a volume of shape \(B, 1, 32, 32, 32\)"):
        model({"ct": wrong})
    with pytest.raises(ValueError, match=r"expected a volume of shape \(B, 1, 32, 32, 32\)"):
        tiny()(wrong)
    with pytest.raises(ValueError, match="multiples of 32"):
        SwinUNETRBackbone(img_size=(48, 32, 32))
    with pytest.raises(ValueError, match="1x1x1 deepest map"):
        SwinUNETRBackbone(img_size=(32, 32, 32), feature_size=12, norm_name="instance")
    with pytest.raises(ValueError, match="1 input channel"):
        Pemma(swinunetr_tiny(in_channels=2))


def test_pet_token_skips_are_refused_on_swin():
    with pytest.raises(ValueError, match="pet_skips='image\\+tokens' needs a UNETR"):
        Pemma(tiny(), pet_skips="image+tokens")
