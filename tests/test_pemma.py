"""PEMMA (paper 5) on a tiny UNETR: counts, equivalences, frozen parts, merging, saving,
single-modality inference, training, the Cox loss and input errors (CPU, seconds)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

import neuroadapt.models.unetr  # noqa: F401 - registers unetr_ct / unetr_tiny
from neuroadapt.methods.pemma import CTOnly, EarlyFusion, Pemma
from neuroadapt.methods.registry import get_method
from neuroadapt.methods.survival import SegmentationSurvivalLoss, cox_partial_likelihood_loss
from neuroadapt.models.backbones import get_backbone, load_pretrained, sha256_of
from neuroadapt.models.unetr import UNETRBackbone, unetr_ct, unetr_tiny

torch.set_num_threads(1)

SIZE = 32  # unetr_tiny: 32^3 input, 8 tokens of 48 dims, feature size 8
D, FS, N, LAYERS = 48, 8, 8, 12
BOTH_ONLY = (0.0, 0.0, 1.0)  # no modality dropout: deterministic training steps


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_linear(d_in: int, d_out: int, r: int) -> int:
    """LoRA on a Linear: A (r x d_in) + B (d_out x r)."""
    return r * (d_in + d_out)


def pemma_counts(d: int, fs: int, n: int, r: int, dora: bool, hidden: int = 128) -> dict:
    """Closed-form trainable parameters of PEMMA on a 1-channel UNETR (hidden d, feature
    size fs, n patches of 16^3), by part."""
    per_block = lora_linear(d, 3 * d, r) + lora_linear(d, d, r)  # fused qkv + out_proj
    if dora:
        per_block += 3 * d + d  # one magnitude per output row of each adapted Linear
    return {
        "adapters": LAYERS * per_block,
        # E^P: conv 16^3 (1 -> d) with bias + position embeddings (n x d)
        "pet_embedding": d * 16**3 + d + n * d,
        # encoder1 copy: conv 3^3 (1 -> fs), conv 3^3 (fs -> fs), 1x1 residual conv (1 -> fs);
        # no biases (a norm follows each), instance norm without affine parameters
        "pet_skip": fs * 27 + fs * fs * 27 + fs,
        "beta": 1,
        "head": d * hidden + hidden + hidden * 1,  # no output bias (Cox is shift-free)
    }


def tiny(**kwargs) -> UNETRBackbone:
    torch.manual_seed(0)
    return unetr_tiny(**kwargs)


def volumes(batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ct = torch.randn(batch, 1, SIZE, SIZE, SIZE, generator=gen)
    pet = torch.randn(batch, 1, SIZE, SIZE, SIZE, generator=gen)
    return ct, pet


def randomise(params, seed: int = 11, scale: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=gen))


def targets(batch: int = 2) -> dict[str, torch.Tensor]:
    mask = torch.zeros(batch, 1, SIZE, SIZE, SIZE)
    mask[:, :, 10:20, 10:20, 10:20] = 1
    return {
        "mask": mask,
        "time": torch.arange(1.0, batch + 1),
        "event": torch.ones(batch),
    }


# --- backbone -------------------------------------------------------------------------


def test_unetr_pieces_chain_to_monai_forward():
    backbone = tiny().eval()
    ct, _ = volumes()
    with torch.no_grad():
        segmentation, tokens = backbone.segment_with_tokens(ct)
        torch.testing.assert_close(segmentation, backbone.net(ct))
        features = backbone.forward_features(ct)
    assert segmentation.shape == (2, 1, SIZE, SIZE, SIZE) and tokens.shape == (2, N, D)
    assert features.pooled.shape == (2, D) and len(features.hidden_states) == LAYERS
    assert backbone.stem_key in backbone.net.state_dict()
    assert len(backbone.lora_targets()) == 2 * LAYERS


def test_paper_size_backbone_and_pemma_share_of_early_fusion():
    """unetr_ct: 96^3, hidden 768, 216 tokens. The real PEMMA (r=8) and early fusion, built
    on the meta device (shapes only), match the closed forms, and PEMMA trains 4.0% of what
    early fusion trains (paper: about 8%), 86% of it the PET patch embedding."""
    with torch.device("meta"):
        ct = unetr_ct()
        size = n_params(ct)
        pemma = Pemma(unetr_ct(), r=8).parameter_report()
        early = EarlyFusion(unetr_ct()).parameter_report()
    assert ct.num_patches == 216 and ct.feature_dim == 768 and ct.img_size == (96, 96, 96)
    parts = pemma_counts(768, 16, 216, 8, dora=False)
    assert pemma.trainable == sum(parts.values())
    assert pemma.total == size + pemma.trainable
    head = 768 * 128 + 128 + 128
    assert early.trainable == size + 768 * 16**3 + 16 * 27 + 16 + head  # + a second channel
    share = pemma.trainable / early.trainable
    print(f"unetr_ct {size:,} params; PEMMA trains {pemma.trainable:,} = {100 * share:.1f}% of EF")
    assert share == pytest.approx(0.0402, abs=5e-4)
    assert parts["pet_embedding"] / pemma.trainable == pytest.approx(0.858, abs=1e-3)


def test_bare_monai_unetr_checkpoint_loads(tmp_path):
    """A checkpoint of MONAI's UNETR itself (as published, e.g. under "state_dict") loads
    into the wrapper through the project's checksum-checked loader."""
    source = tiny()
    path = tmp_path / "unetr_ct.pt"
    torch.save({"state_dict": source.net.state_dict()}, path)
    target = unetr_tiny()
    assert load_pretrained(target, path, sha256_of(path)) == []
    for key, value in source.net.state_dict().items():
        assert torch.equal(value, target.net.state_dict()[key]), key


def test_backbones_registered():
    with pytest.warns(UserWarning, match="NO PRETRAINED WEIGHTS"):
        backbone = get_backbone("unetr_tiny")
    assert isinstance(backbone, UNETRBackbone) and backbone.img_size == (SIZE,) * 3
    for name in ("pemma", "early_fusion", "ct_only"):
        assert get_method(name).name == name
    assert Pemma.modalities == ("ct", "pet") and CTOnly.modalities == ("ct",)


def test_pet_token_skips_add_the_copies_of_encoder2_to_4_at_paper_size():
    """pet_skips="image+tokens" (the paper's "skip connections" read as UNETR's token skips
    too): PEMMA then trains 5.8% of early fusion, the copies being 1,757,184 parameters."""
    with torch.device("meta"):
        ct = unetr_ct()
        copies = sum(n_params(e) for e in ct.token_skip_encoders)
        image = Pemma(unetr_ct(), r=8).parameter_report()
        tokens = Pemma(unetr_ct(), r=8, pet_skips="image+tokens").parameter_report()
        early = EarlyFusion(unetr_ct()).parameter_report()
    assert copies == 1_757_184
    assert tokens.trainable == image.trainable + copies + 3  # + one beta per token skip
    assert tokens.trainable / early.trainable == pytest.approx(0.0585, abs=5e-4)


# --- pemma: counts, equivalence, frozen parts -------------------------------------------


@pytest.mark.parametrize(("r", "dora"), [(4, False), (8, False), (8, True)])
def test_pemma_parameter_counts_are_closed_form(r, dora):
    backbone = tiny()
    base = n_params(backbone)
    method = Pemma(backbone, r=r, use_dora=dora)
    parts = pemma_counts(D, FS, N, r, dora)
    trainable = sum(parts.values())
    report = method.parameter_report()
    assert report.trainable == trainable
    assert report.total == base + trainable
    assert report.percent == pytest.approx(100 * trainable / (base + trainable))
    assert sum(p.numel() for p in method.adapter_parameters()) == parts["adapters"]
    pet = parts["pet_embedding"] + parts["pet_skip"] + parts["beta"]
    assert sum(p.numel() for p in method.pet_parameters()) == pet
    groups = method.param_groups()
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("adapters", 1e-4),
        ("pet_pathway", 1e-4),
        ("head", 1e-4),
    ]
    grouped = [id(p) for g in groups for p in g["params"]]
    wanted = {id(p) for p in method.model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == wanted


def test_pet_pathway_starts_as_copy_of_ct_pathway():
    backbone = tiny()
    reference = copy.deepcopy(backbone)
    method = Pemma(backbone)
    for a, b in zip(
        method.model.pet_embedding.state_dict().values(),
        reference.patch_embedding.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert method.model.beta.item() == 0.0


@pytest.mark.parametrize("dora", [False, True])
def test_ct_only_input_reproduces_frozen_backbone_at_init(dora):
    backbone = tiny()
    reference = copy.deepcopy(backbone).eval()
    method = Pemma(backbone, use_dora=dora)
    model = method.model.eval()
    assert all(torch.count_nonzero(m.lora_B["default"].weight) == 0 for m in lora_layers(model))
    ct, pet = volumes()
    with torch.no_grad():
        out = model({"ct": ct})
        torch.testing.assert_close(out["segmentation"], reference(ct), rtol=1e-5, atol=1e-6)
        # PET changes the CT tokens through attention even with zero-initialised adapters
        both = model({"ct": ct, "pet": pet})
    assert out["risk"].shape == (2,)
    assert (both["segmentation"] - out["segmentation"]).abs().max() > 1e-4


def lora_layers(module: nn.Module) -> list[LoraLayer]:
    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def test_step_changes_only_trainable_parts_and_keeps_norm_statistics():
    """Batch norm in the tiny UNETR, so frozen running statistics exist and must not move."""
    method = Pemma(tiny(norm_name="batch"), modality_dropout=BOTH_ONLY, lr_adapters=1e-2)
    model = method.model.train()
    frozen_bn = [
        m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    assert frozen_bn and all(not m.training for m in frozen_bn)
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.clone() for k, v in model.backbone.named_buffers()}
    trainable = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    optimizer = method.optimizer(weight_decay=0.0)  # so only a gradient can move a weight
    ct, pet = volumes()
    for _ in range(2):  # with B = 0 and beta = 0 the first step leaves A and z_P gradient-free
        optimizer.zero_grad()
        method.loss(model({"ct": ct, "pet": pet}), targets()).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert frozen and all(torch.equal(v, params[k]) for k, v in frozen.items())
    after = dict(model.backbone.named_buffers())
    assert buffers and all(torch.equal(v, after[k]) for k, v in buffers.items())
    unchanged = sorted(k for k, v in trainable.items() if torch.equal(v, params[k]))
    assert unchanged == []
    assert model.beta.item() != 0.0


# --- pemma: single-modality inference and per-sample presence ----------------------------


def test_single_modality_inference_and_mixed_batches():
    method = Pemma(tiny())
    randomise(method.adapter_parameters())
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


def test_modality_dropout_frequencies():
    model = Pemma(tiny()).model.train()
    torch.manual_seed(5)
    patterns = model._patterns(
        torch.ones(20000, dtype=torch.bool), torch.ones(20000, dtype=torch.bool)
    )
    shares = torch.bincount(patterns, minlength=3).float() / 20000
    torch.testing.assert_close(shares, torch.tensor([0.2, 0.2, 0.6]), atol=0.015, rtol=0)
    # a sample with one modality keeps it; dropout never removes its only image
    ct_only = model._patterns(torch.ones(50, dtype=torch.bool), torch.zeros(50, dtype=torch.bool))
    assert (ct_only == 0).all()
    assert (
        model.eval()._patterns(torch.ones(50, dtype=torch.bool), torch.ones(50, dtype=torch.bool))
        == 2
    ).all()


# --- pemma: merging and saving -------------------------------------------------------------


@pytest.mark.parametrize("dora", [False, True])
def test_merged_equals_unmerged(dora):
    backbone = tiny()
    reference = copy.deepcopy(backbone).eval()
    method = Pemma(backbone, use_dora=dora)
    randomise(method.adapter_parameters())
    with torch.no_grad():
        method.model.beta.fill_(0.3)
    model = method.model.eval()
    merged = method.merged_model().eval()
    assert not lora_layers(merged)
    # a plain network: the backbone's weights, E^P, the PET skip copy, beta and the head
    pet_and_head = (
        sum(pemma_counts(D, FS, N, 8, dora).values()) - pemma_counts(D, FS, N, 8, dora)["adapters"]
    )
    assert n_params(merged) == n_params(reference) + pet_and_head
    ct, pet = volumes()
    with torch.no_grad():
        for inputs in ({"ct": ct}, {"ct": ct, "pet": pet}, {"pet": pet}):
            a, b = merged(inputs), model(inputs)
            for key in ("segmentation", "risk"):
                torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
        # the adapters matter: CT-only output now differs from the frozen backbone
        assert (model({"ct": ct})["segmentation"] - reference(ct)).abs().max() > 1e-3


def test_adapters_save_and_load_alone(tmp_path):
    backbone = tiny()
    base_weights = copy.deepcopy(backbone.state_dict())
    base_params = n_params(backbone)
    method = Pemma(backbone)
    randomise([p for p in method.model.parameters() if p.requires_grad])
    files = method.save_adapters(tmp_path)
    assert {f.name for f in files} == {"pemma_config.json", "pemma_trainable.safetensors"}
    size = (tmp_path / "pemma_trainable.safetensors").stat().st_size
    trainable = method.parameter_report().trainable
    assert 4 * trainable <= size < 4 * trainable + 64 * 1024  # float32 tensors + header
    assert size < 0.3 * 4 * base_params  # tiny model; about 4% at paper size

    fresh_backbone = unetr_tiny()
    fresh_backbone.load_state_dict(base_weights)
    fresh = Pemma(fresh_backbone)
    fresh.load_adapters(tmp_path)
    ct, pet = volumes()
    method.model.eval()
    fresh.model.eval()
    with torch.no_grad():
        for inputs in ({"ct": ct, "pet": pet}, {"pet": pet}):
            a, b = fresh.model(inputs), method.model(inputs)
            for key in ("segmentation", "risk"):
                torch.testing.assert_close(a[key], b[key])
    with pytest.raises(ValueError, match="adapters do not fit"):
        Pemma(unetr_tiny(), r=4).load_adapters(tmp_path)


def test_pet_token_skips_start_as_the_image_only_model_and_train():
    ct, pet = volumes()
    image = Pemma(tiny(), modality_dropout=BOTH_ONLY)
    tokens = Pemma(tiny(), modality_dropout=BOTH_ONLY, pet_skips="image+tokens", lr_pet=1e-2)
    parts = pemma_counts(D, FS, N, 8, dora=False)
    copies = sum(n_params(e) for e in tiny().token_skip_encoders)
    assert sum(p.numel() for p in tokens.pet_parameters()) == (
        parts["pet_embedding"] + parts["pet_skip"] + parts["beta"] + copies + 3
    )
    with torch.no_grad():  # betas at 0 and copies equal to the frozen encoders
        for inputs in ({"ct": ct, "pet": pet}, {"pet": pet}, {"ct": ct}):
            a, b = image.model.eval()(inputs), tokens.model.eval()(inputs)
            torch.testing.assert_close(a["segmentation"], b["segmentation"])
    model = tokens.model.train()
    optimizer = tokens.optimizer(weight_decay=0.0)
    for _ in range(2):
        optimizer.zero_grad()
        tokens.loss(model({"ct": ct, "pet": pet}), targets()).backward()
        optimizer.step()
    assert torch.count_nonzero(model.token_betas) == 3
    with torch.no_grad():
        a = image.model.eval()({"ct": ct, "pet": pet})["segmentation"]
        b = tokens.model.eval()({"ct": ct, "pet": pet})["segmentation"]
    assert (a - b).abs().max() > 1e-4


def test_pet_token_skips_save_load_and_refusals(tmp_path):
    backbone = tiny()
    weights = copy.deepcopy(backbone.state_dict())
    method = Pemma(backbone, pet_skips="image+tokens")
    randomise([p for p in method.model.parameters() if p.requires_grad])
    method.save_adapters(tmp_path)
    assert '"pet_skips": "image+tokens"' in (tmp_path / "pemma_config.json").read_text()
    fresh_backbone = unetr_tiny()
    fresh_backbone.load_state_dict(weights)
    fresh = Pemma(fresh_backbone, pet_skips="image+tokens")
    fresh.load_adapters(tmp_path)
    ct, pet = volumes()
    with torch.no_grad():
        a = fresh.model.eval()({"ct": ct, "pet": pet})
        b = method.model.eval()({"ct": ct, "pet": pet})
    torch.testing.assert_close(a["segmentation"], b["segmentation"])
    with pytest.raises(ValueError, match=r"unexpected \['pet_token_skips"):
        Pemma(unetr_tiny()).load_adapters(tmp_path)
    with pytest.raises(ValueError, match="pet_skips must be one of"):
        Pemma(tiny(), pet_skips="decoder")


# --- baselines --------------------------------------------------------------------------


def test_early_fusion_counts_and_inflated_stem():
    backbone = tiny()
    reference = copy.deepcopy(backbone).eval()
    method = EarlyFusion(backbone)
    head = D * 128 + 128 + 128
    extra_channel = D * 16**3 + FS * 27 + FS  # patch kernel, encoder1 conv1 and conv3
    report = method.parameter_report()
    assert report.total == report.trainable == n_params(reference) + extra_channel + head
    ct, _ = volumes()
    with torch.no_grad():  # CT in both channels responds like CT in the CT model
        out = method.model.eval()({"ct": ct, "pet": ct})
    torch.testing.assert_close(out["segmentation"], reference(ct), rtol=1e-4, atol=1e-5)
    assert n_params(backbone) == n_params(reference)  # the CT backbone was not modified


def test_ct_only_is_full_finetuning_with_head():
    backbone = tiny()
    base = n_params(backbone)
    method = CTOnly(backbone)
    head = D * 128 + 128 + 128
    report = method.parameter_report()
    assert report.total == report.trainable == base + head
    assert [g["name"] for g in method.param_groups()] == ["backbone", "head"]
    with pytest.raises(ValueError, match="none of"):
        method.model({"pet": volumes()[1]})


# --- training on a tiny synthetic cohort -------------------------------------------------


def synthetic_batch(batch: int = 4) -> tuple[dict, dict]:
    """Bright PET blobs at the lesion, faint in CT; larger blobs -> shorter survival."""
    gen = torch.Generator().manual_seed(3)
    grid = torch.stack(torch.meshgrid(*[torch.arange(SIZE, dtype=torch.float)] * 3, indexing="ij"))
    radii = torch.tensor([3.0, 5.0, 7.0, 9.0])[:batch]
    masks = []
    for i, radius in enumerate(radii):
        centre = torch.tensor([14.0 + i, 16.0, 18.0 - i]).view(3, 1, 1, 1)
        masks.append(((grid - centre) ** 2).sum(0) <= radius**2)
    mask = torch.stack(masks).unsqueeze(1).float()
    pet = 3.0 * mask + 0.3 * torch.randn(mask.shape, generator=gen)
    ct = 0.5 * mask + 0.5 * torch.randn(mask.shape, generator=gen)
    time = 100.0 / radii  # months; bigger tumour, shorter time
    event = torch.tensor([1.0, 1.0, 0.0, 1.0])[:batch]
    return {"ct": ct, "pet": pet}, {"mask": mask, "time": time, "event": event}


FAST = {
    "pemma": {"lr_adapters": 1e-2, "lr_head": 1e-2, "modality_dropout": BOTH_ONLY},
    "early_fusion": {"lr_backbone": 1e-3, "lr_head": 1e-3},
    "ct_only": {"lr_backbone": 1e-3, "lr_head": 1e-3},
}


def assert_loss_drops(method, steps: int = 6) -> None:
    """Six optimiser steps on :func:`synthetic_batch` lower the method's loss by 15%."""
    inputs, target = synthetic_batch()
    inputs = {m: inputs[m] for m in method.modalities}
    optimizer = method.optimizer()
    model = method.model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = method.loss(model(inputs), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


@pytest.mark.parametrize("name", sorted(FAST))
def test_each_method_loss_drops_on_tiny_batch(name):
    assert_loss_drops(get_method(name)(tiny(), **FAST[name]))


# --- the Cox loss ---------------------------------------------------------------------------


def test_cox_loss_by_hand():
    risk = torch.tensor([0.3, -0.1, 0.8, 0.2])
    time = torch.tensor([2.0, 5.0, 3.0, 7.0])
    event = torch.tensor([1, 0, 1, 1])
    e = [math.exp(v) for v in (0.3, -0.1, 0.8, 0.2)]
    # risk sets: t=2 -> everyone; t=3 -> samples 2, 1, 3; t=7 -> sample 3 alone
    by_hand = (
        -(
            (0.3 - math.log(e[0] + e[1] + e[2] + e[3]))
            + (0.8 - math.log(e[2] + e[1] + e[3]))
            + (0.2 - math.log(e[3]))
        )
        / 3
    )
    assert cox_partial_likelihood_loss(risk, time, event).item() == pytest.approx(by_hand, 1e-6)


def test_cox_loss_breslow_ties_and_no_events():
    a, b, c = 0.4, -0.3, 1.1
    risk = torch.tensor([a, b, c], requires_grad=True)
    # two events tied at t=1 share one denominator over all three (Breslow)
    s = math.exp(a) + math.exp(b) + math.exp(c)
    by_hand = -((a - math.log(s)) + (b - math.log(s)) + (c - c)) / 3
    loss = cox_partial_likelihood_loss(risk, torch.tensor([1.0, 1.0, 2.0]), torch.ones(3))
    assert loss.item() == pytest.approx(by_hand, 1e-6)
    # a censored subject tied with an event time is still at risk then
    tied = cox_partial_likelihood_loss(
        torch.tensor([a, b]), torch.tensor([1.0, 1.0]), torch.tensor([1, 0])
    )
    assert tied.item() == pytest.approx(-(a - math.log(math.exp(a) + math.exp(b))), 1e-6)
    # shifting every risk leaves the partial likelihood unchanged
    shifted = cox_partial_likelihood_loss(risk + 5, torch.tensor([1.0, 1.0, 2.0]), torch.ones(3))
    assert shifted.item() == pytest.approx(by_hand, 1e-5)
    none = cox_partial_likelihood_loss(risk, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3))
    none.backward()
    assert none.item() == 0.0 and torch.equal(risk.grad, torch.zeros(3))
    with pytest.raises(ValueError, match="1-D tensors of equal length"):
        cox_partial_likelihood_loss(risk, torch.ones(2), torch.ones(3))


# --- bad input -----------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors():
    method = Pemma(tiny())
    model = method.model.eval()
    wrong = torch.randn(1, 1, 24, 24, 24)
    with pytest.raises(ValueError, match=r"pet: expected a volume of shape \(B, 1, 32, 32, 32\)"):
        model({"pet": wrong})
    with pytest.raises(ValueError, match="expected a volume"):
        tiny()(wrong)
    with pytest.raises(ValueError, match="none of the modalities"):
        model({})
    ct, pet = volumes()
    with pytest.raises(ValueError, match=r"samples \[1\] have neither ct nor pet"):
        model({"ct": ct, "ct_present": torch.tensor([True, False])})
    with pytest.raises(ValueError, match="multiples of 16"):
        UNETRBackbone(img_size=(40, 32, 32))
    with pytest.raises(ValueError, match="1 input channel"):
        Pemma(unetr_tiny(in_channels=2))
    with pytest.raises(ValueError, match="modality_dropout"):
        Pemma(unetr_tiny(), modality_dropout=(0.5, 0.5, 0.5))
    with pytest.raises(KeyError, match="'time', 'event'"):
        SegmentationSurvivalLoss()(model({"ct": ct}), {"mask": targets()["mask"]})
