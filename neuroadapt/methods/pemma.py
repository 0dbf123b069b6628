"""``pemma``: a CT-pretrained UNETR (or Swin UNETR) extended with a PET pathway through
LoRA/DoRA (paper 5), and its two baselines ``early_fusion`` and ``ct_only``.

Paper 5 (PEMMA: Efficient Parameter Adaptation for Multi-Modal Medical Image Segmentation and
Prognosis, arXiv 2504.13645). The CT UNETR (patch embedding E^C, 12 transformer blocks,
decoder, image skip path) is frozen. Added and trained:

- E^P, a PET patch embedding of E^C's shape (patch conv + position embeddings). Initialised
  as a copy of E^C's weights (the paper does not say how): PET tokens then start in the
  token space the frozen blocks were trained on, instead of random vectors they never saw.
- LoRA (or DoRA, ``use_dora=True``) on every block's attention projections (fused ``qkv``
  and ``out_proj``), through peft with ``target_modules``. Default rank ``r = 8`` and
  ``lora_alpha = 16`` (scaling 2; the paper gives neither value). B starts at zero.
- CT and PET tokens are concatenated along the sequence and pass the blocks together, so
  self-attention carries PET information into the CT tokens; only the CT tokens' hidden
  states (blocks 3, 6, 9 and the final norm) go to the frozen decoder.
- The image skip path becomes ``z_C + beta * z_P``: ``z_C`` from the frozen ``encoder1`` on
  CT, ``z_P`` from a trainable copy of ``encoder1`` on PET, ``beta`` a trainable scalar
  starting at 0 (so the initial model is exactly the CT model on CT input).
- ``pet_skips="image+tokens"`` (not the default): the paper's "skip connections" may mean
  UNETR's token skips too. Then trainable copies of ``encoder2``-``encoder4`` read the PET
  tokens' outputs of blocks 3, 6 and 9, and each token skip becomes ``s_C + beta_k * s_P``
  (``beta_k`` from 0; PET only: ``s_P`` in ``s_C``'s place). At paper size this adds
  1,757,184 parameters (PEMMA then trains 5.8% of early fusion instead of 4.0%; the paper
  says about 8%). UNETR only: Swin UNETR's skips come from the one adapted encoder.
- Modality dropout in training: each sample with both images is shown CT only, PET only or
  both with probabilities ``modality_dropout`` (default 0.2, 0.2, 0.6, the paper's values).
- A prognosis head (MLP, 128 hidden units) on the mean of the final CT tokens -> risk ``(B,)``
  (log-hazard), trained with the Cox loss. Its output layer has no bias: the Cox partial
  likelihood is unchanged by adding a constant to every risk (the baseline hazard absorbs
  it), so such a bias would get no gradient and stay unidentified.

Single-modality inference. CT only: CT tokens alone, skip ``z_C`` (at initialisation this is
the CT UNETR). PET only: the PET tokens take the CT tokens' place (they go through the blocks
alone and on to the decoder and the prognosis head) and ``z_P`` takes ``z_C``'s place in the
skip path, without ``beta``; modality dropout trains exactly this path. A per-sample missing
modality (``inputs["ct_present"]`` / ``inputs["pet_present"]``) is handled by running each
group of samples with the same available modalities separately: no zero-filled images and no
attention masks, so each group computes exactly what a batch of that kind would.

Loss (shared with the baselines): Dice-CE on the mask + ``weight_survival`` * Cox negative
log partial likelihood (``neuroadapt.methods.survival``).

Baselines:

- ``early_fusion``: one UNETR on the 2-channel stack (CT, PET), every weight trained. Its
  weights come from the given CT UNETR; the three kernels that read the input (patch
  embedding, ``encoder1``'s first conv and its 1x1 residual conv) are inflated to two
  channels with ``inflate_stem`` (channel mean / 2 per channel, as ``load_pretrained`` does).
  A modality missing for a sample is a zero channel (the model has no other way to run).
- ``ct_only``: the CT UNETR fine-tuned on CT alone with the same prognosis head. Full
  fine-tuning, not LoRA: it is the reference for what CT alone can give when every weight
  may move, so that any gain of PEMMA is due to PET and not to a restricted CT model.

Swin UNETR (``SwinUNETRBackbone``, e.g. ``swinunetr_ct``). The paper runs PEMMA on Swin UNETR
too and says only that it "requires an Adapter layer for input handling": shifted-window
attention works on a fixed 3D grid of tokens, so CT and PET tokens cannot be concatenated
into one longer sequence as with UNETR. The layer itself is not described; our reading:

- Input adapter (replaces E^P): a trainable 1x1x1 Conv3d, 2 -> 1 channel, in front of the
  frozen Swin patch embedding. It mixes the stack (CT, PET) voxel-wise into the one image
  the frozen network expects, initialised to weights (1, 0) and bias 0, so its output is the
  CT channel and PEMMA-Swin starts as exactly the CT model (on CT, and also on CT + PET,
  since ``beta`` starts at 0 too). A missing modality is a zero channel in this stack; a
  PET-only sample goes through the same layer, whose PET weight modality dropout trains
  (it starts at 0, so PET-only output is meaningless before training). Three parameters:
  the smallest layer that lets the frozen encoder see PET at all; cross-modal mixing beyond
  a voxel-wise blend is left to LoRA in the attention and to the skip path.
- LoRA/DoRA on every Swin block's window-attention projections (``attn.qkv`` and
  ``attn.proj``), same rank and alpha defaults as for UNETR. Swin encoder, patch mergings,
  decoder and ``encoder1`` frozen.
- Skip path ``z_C + beta * z_P`` on ``encoder1`` (the only Swin UNETR part besides the patch
  embedding that reads the raw image; its other skips come from the Swin encoder):
  frozen ``encoder1`` on CT, trainable copy on PET, ``beta`` from 0. PET only: ``z_P``
  replaces ``z_C`` as for UNETR. The decoder reads the five Swin maps of the adapted input.
- Prognosis head on the spatial mean of the deepest Swin map (``16 * feature_size``
  channels).
- ``early_fusion`` inflates the three input kernels (Swin patch embedding, ``encoder1``'s
  conv1 and residual conv3) exactly as for UNETR; ``ct_only`` is unchanged.

``Pemma``, ``EarlyFusion`` and ``CTOnly`` dispatch on the backbone type: ``PemmaNet``
(UNETR) or ``PemmaSwinNet`` (Swin UNETR), sharing modality dropout, per-sample presence
grouping and the frozen-BatchNorm handling; the baselines use ``segment_and_pool``, which
both backbones provide.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from neuroadapt.methods.base import MultimodalMethod
from neuroadapt.methods.lora import merge_adapters
from neuroadapt.methods.registry import register_method
from neuroadapt.methods.survival import SegmentationSurvivalLoss
from neuroadapt.models.backbones import inflate_stem
from neuroadapt.models.swin_unetr import SwinUNETRBackbone
from neuroadapt.models.unetr import UNETRBackbone, check_volume

__all__ = [
    "CTOnly",
    "EarlyFusion",
    "Pemma",
    "PemmaNet",
    "PemmaSwinNet",
    "SegmentationBackbone",
    "SegmentationPrognosisNet",
    "inflate_inputs",
    "make_input_adapter",
    "make_risk_head",
]

#: The CT segmentation networks PEMMA and its baselines accept.
SegmentationBackbone = UNETRBackbone | SwinUNETRBackbone

#: What the PET pathway adds to the decoder's skips (``Pemma(pet_skips=...)``): the image
#: skip (``encoder1``) only, or also UNETR's token skips (``encoder2``-``encoder4``).
PET_SKIPS = ("image", "image+tokens")
#: Per-sample modality patterns (index into ``modality_dropout``).
CT_ONLY, PET_ONLY, BOTH = 0, 1, 2
WEIGHTS_FILE = "pemma_trainable.safetensors"
CONFIG_FILE = "pemma_config.json"


def _presence(inputs: Mapping[str, torch.Tensor], name: str, batch: int) -> torch.Tensor:
    """Bool ``(B,)``: which samples have modality ``name`` (absent key: none)."""
    if name not in inputs:
        return torch.zeros(batch, dtype=torch.bool)
    flag = inputs.get(f"{name}_present")
    if flag is None:
        return torch.ones(batch, dtype=torch.bool)
    flag = torch.as_tensor(flag).to(device="cpu", dtype=torch.bool).reshape(-1)
    if flag.numel() != batch:
        raise ValueError(f"{name}_present has {flag.numel()} entries for a batch of {batch}")
    return flag


def _batch_size(inputs: Mapping[str, torch.Tensor], modalities: Sequence[str]) -> int:
    sizes = {inputs[m].shape[0] for m in modalities if m in inputs}
    if not sizes:
        raise ValueError(f"inputs contain none of the modalities {list(modalities)}")
    if len(sizes) > 1:
        raise ValueError(f"modalities have different batch sizes {sorted(sizes)}")
    return sizes.pop()


def _keep_frozen_batchnorm_in_eval(module: nn.Module) -> None:
    """A frozen BatchNorm would still update its running statistics in train mode."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in m.parameters()
        ):
            m.eval()


class _PemmaNetBase(nn.Module):
    """What PEMMA does alike on both backbone families: input checks, modality dropout,
    grouping of samples by available modalities, the PET skip copy, ``beta`` and the head.
    Subclasses add their PET input pathway and implement ``_forward_group``."""

    def __init__(
        self,
        backbone: nn.Module,
        pet_skip: nn.Module,
        head: nn.Module,
        modality_dropout: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pet_skip = pet_skip
        self.beta = nn.Parameter(torch.zeros(()))
        self.head = head
        self.modality_dropout = modality_dropout

    @property
    def segmenter(self) -> SegmentationBackbone:
        """The (possibly LoRA-injected) CT backbone inside ``backbone``."""
        b = self.backbone
        return b.get_base_model() if isinstance(b, PeftModel) else b

    def pet_pathway(self) -> list[nn.Parameter]:
        """The trainable PET pathway: PET input module, PET skip copy, ``beta``."""
        raise NotImplementedError

    def _patterns(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        """Long ``(B,)`` pattern per sample, after modality dropout in training mode."""
        missing = torch.nonzero(~(ct | pet)).flatten().tolist()
        if missing:
            raise ValueError(f"samples {missing} have neither ct nor pet; PEMMA needs one")
        patterns = torch.where(ct & pet, BOTH, torch.where(ct, CT_ONLY, PET_ONLY))
        both = patterns == BOTH
        if self.training and bool(both.any()):
            probs = torch.tensor(self.modality_dropout, dtype=torch.float)
            patterns[both] = torch.multinomial(probs, int(both.sum()), replacement=True)
        return patterns

    def _skip(
        self, pattern: int, ct: torch.Tensor | None, pet: torch.Tensor | None
    ) -> torch.Tensor:
        """Image skip features ``(B, feature_size, *img_size)``: ``z_C`` (CT only),
        ``z_P`` (PET only, in ``z_C``'s place) or ``z_C + beta * z_P`` (both)."""
        if pattern == PET_ONLY:
            return self.pet_skip(pet)
        skip = self.segmenter.skip_encoder(ct)
        if pattern == BOTH:
            skip = skip + self.beta * self.pet_skip(pet)
        return skip

    def _forward_group(
        self, pattern: int, ct: torch.Tensor | None, pet: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmentation logits and risk of samples that all share ``pattern``."""
        raise NotImplementedError

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = _batch_size(inputs, ("ct", "pet"))
        img_size = self.segmenter.img_size
        for name in ("ct", "pet"):
            if name in inputs:
                check_volume(inputs[name], 1, img_size, name)
        patterns = self._patterns(_presence(inputs, "ct", batch), _presence(inputs, "pet", batch))
        order, segmentations, risks = [], [], []
        for pattern in (CT_ONLY, PET_ONLY, BOTH):
            index = torch.nonzero(patterns == pattern).flatten()
            if index.numel() == 0:
                continue
            ct = inputs["ct"][index.to(inputs["ct"].device)] if pattern != PET_ONLY else None
            pet = inputs["pet"][index.to(inputs["pet"].device)] if pattern != CT_ONLY else None
            segmentation, risk = self._forward_group(pattern, ct, pet)
            order.append(index)
            segmentations.append(segmentation)
            risks.append(risk)
        if len(order) == 1:
            return {"segmentation": segmentations[0], "risk": risks[0]}
        inverse = torch.argsort(torch.cat(order)).to(segmentations[0].device)
        return {
            "segmentation": torch.cat(segmentations)[inverse],
            "risk": torch.cat(risks)[inverse],
        }

    def train(self, mode: bool = True) -> _PemmaNetBase:
        super().train(mode)
        if mode:
            _keep_frozen_batchnorm_in_eval(self)
        return self


class PemmaNet(_PemmaNetBase):
    """The PEMMA network on UNETR: ``inputs`` mapping -> ``{"segmentation", "risk"}``.

    ``inputs``: ``"ct"`` and/or ``"pet"`` volumes ``(B, 1, *img_size)`` (a modality absent
    for the whole batch is left out), optional bool ``(B,)`` ``"ct_present"`` /
    ``"pet_present"``. Outputs: ``"segmentation"`` logits ``(B, 1, *img_size)``, ``"risk"``
    ``(B,)`` log-hazard. ``backbone`` is the peft-wrapped CT UNETR (or, after merging, a
    plain ``UNETRBackbone``); ``pet_embedding`` is E^P, ``pet_skip`` the PET copy of
    ``encoder1``, ``beta`` the skip weight, ``head`` the prognosis MLP.
    """

    def __init__(
        self,
        backbone: nn.Module,
        pet_embedding: nn.Module,
        pet_skip: nn.Module,
        head: nn.Module,
        modality_dropout: tuple[float, float, float],
        pet_token_skips: Sequence[nn.Module] | None = None,
    ) -> None:
        super().__init__(backbone, pet_skip, head, modality_dropout)
        self.pet_embedding = pet_embedding
        # pet_skips="image+tokens": PET copies of encoder2-4 on the PET tokens, one beta each
        self.pet_token_skips = None if pet_token_skips is None else nn.ModuleList(pet_token_skips)
        self.token_betas = (
            None if pet_token_skips is None else nn.Parameter(torch.zeros(len(pet_token_skips)))
        )

    @property
    def unetr(self) -> UNETRBackbone:
        """The (possibly LoRA-injected) ``UNETRBackbone`` inside ``backbone``."""
        return self.segmenter  # type: ignore[return-value]

    def pet_pathway(self) -> list[nn.Parameter]:
        tokens = [] if self.pet_token_skips is None else [*self.pet_token_skips.parameters()]
        betas = [] if self.token_betas is None else [self.token_betas]
        return [
            *self.pet_embedding.parameters(),
            *self.pet_skip.parameters(),
            self.beta,
            *tokens,
            *betas,
        ]

    def _token_skips(self, pattern: int, hidden: list[torch.Tensor]) -> list | None:
        """With PET token skips, the decoder's three token skip features: the frozen ones
        of the CT tokens + ``beta_k`` times the PET copies' of the PET tokens (both), or the
        PET copies' alone (PET only, in the frozen ones' place); None: the frozen ones."""
        if self.pet_token_skips is None or pattern == CT_ONLY:
            return None
        unetr = self.unetr
        if pattern == PET_ONLY:
            return unetr.token_skips(hidden, self.pet_token_skips)
        n = unetr.num_patches  # tokens [0, n) are CT's, [n, 2n) PET's
        ct_skips = unetr.token_skips([h[:, :n] for h in hidden])
        pet_skips = unetr.token_skips([h[:, n:] for h in hidden], self.pet_token_skips)
        return [c + b * p for c, b, p in zip(ct_skips, self.token_betas, pet_skips, strict=True)]

    def _forward_group(
        self, pattern: int, ct: torch.Tensor | None, pet: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        unetr = self.unetr
        if pattern == PET_ONLY:  # PET tokens take the CT tokens' place
            tokens = self.pet_embedding(pet)
        else:
            tokens = unetr.embed(ct)
            if pattern == BOTH:
                tokens = torch.cat([tokens, self.pet_embedding(pet)], dim=1)
        final, hidden = unetr.run_blocks(tokens)
        token_skips = self._token_skips(pattern, hidden)
        n = unetr.num_patches  # the first n tokens are the decoder's (CT, or PET alone)
        final, hidden = final[:, :n], [h[:, :n] for h in hidden]
        segmentation = unetr.decode(final, hidden, self._skip(pattern, ct, pet), token_skips)
        risk = self.head(final.mean(dim=1)).squeeze(-1)
        return segmentation, risk


def make_input_adapter() -> nn.Conv3d:
    """PEMMA-Swin's input adapter: a 1x1x1 Conv3d (CT, PET) ``(B, 2, *img_size)`` -> one
    image ``(B, 1, *img_size)`` for the frozen Swin encoder, initialised to pass CT through
    unchanged (weights (1, 0), bias 0)."""
    adapter = nn.Conv3d(2, 1, kernel_size=1)
    with torch.no_grad():
        adapter.weight.zero_()
        adapter.weight[0, 0] = 1.0
        adapter.bias.zero_()
    return adapter


class PemmaSwinNet(_PemmaNetBase):
    """The PEMMA network on Swin UNETR: same inputs and outputs as ``PemmaNet``.

    ``backbone`` is the peft-wrapped CT Swin UNETR (or a plain ``SwinUNETRBackbone`` after
    merging); ``input_adapter`` mixes the stack (CT, PET) ``(B, 2, *img_size)`` (a missing
    modality is a zero channel) into the encoder's one input channel; ``pet_skip`` is the PET
    copy of ``encoder1``, ``beta`` the skip weight, ``head`` the prognosis MLP on the pooled
    deepest Swin features.
    """

    def __init__(
        self,
        backbone: nn.Module,
        input_adapter: nn.Module,
        pet_skip: nn.Module,
        head: nn.Module,
        modality_dropout: tuple[float, float, float],
    ) -> None:
        super().__init__(backbone, pet_skip, head, modality_dropout)
        self.input_adapter = input_adapter

    def pet_pathway(self) -> list[nn.Parameter]:
        return [*self.input_adapter.parameters(), *self.pet_skip.parameters(), self.beta]

    def _forward_group(
        self, pattern: int, ct: torch.Tensor | None, pet: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        swin = self.segmenter
        present = ct if ct is not None else pet
        channels = [x if x is not None else torch.zeros_like(present) for x in (ct, pet)]
        hidden = swin.encode(self.input_adapter(torch.cat(channels, dim=1)))
        segmentation = swin.decode(hidden, self._skip(pattern, ct, pet))
        risk = self.head(hidden[-1].mean(dim=(2, 3, 4))).squeeze(-1)
        return segmentation, risk


def make_risk_head(feature_dim: int, hidden: int | None = 128) -> nn.Module:
    """Prognosis head: pooled features ``(B, feature_dim)`` -> log-hazard ``(B, 1)``.

    Linear -> ReLU -> Linear (``hidden`` units; ``None``: one Linear). The last layer has no
    bias because the Cox loss is invariant to a shift of all risks (no gradient reaches it).
    """
    if hidden is None:
        return nn.Linear(feature_dim, 1, bias=False)
    return nn.Sequential(
        nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1, bias=False)
    )


def _check_ct_backbone(backbone: nn.Module, method: str) -> None:
    if not isinstance(backbone, (UNETRBackbone, SwinUNETRBackbone)):
        raise TypeError(
            f"{method} needs a UNETRBackbone or SwinUNETRBackbone (e.g. unetr_ct, "
            f"swinunetr_ct), not {type(backbone)}"
        )
    if backbone.in_channels != 1 or backbone.out_channels != 1:
        raise ValueError(
            f"{method} needs the CT network with 1 input channel (CT) and 1 output channel "
            f"(the lesion), got in_channels={backbone.in_channels}, "
            f"out_channels={backbone.out_channels}; build it with e.g. unetr_ct(1, 1)"
        )


@register_method(
    "pemma",
    paper="paper 5, PEMMA (arXiv 2504.13645)",
    family="segmentation_survival",
    tasks=("segmentation+survival",),
    backbones="segmentation",
    needs_inputs=("ct",),
    tunable={"lr_adapters": 1e-4, "lr_pet": None, "lr_head": 1e-4, "r": 8},
)
class Pemma(MultimodalMethod):
    """PEMMA (paper 5) on a CT UNETR or Swin UNETR: frozen CT model + PET pathway +
    LoRA/DoRA + risk head.

    ``backbone`` is a ``UNETRBackbone`` or ``SwinUNETRBackbone`` with 1 input and 1 output
    channel (pretrained on CT or random); peft modifies it in place. The PET pathway is E^P
    (UNETR) or the input adapter (Swin), plus the PET skip copy and ``beta``. Parameter
    groups: ``adapters`` (LoRA/DoRA) at ``lr_adapters``, ``pet_pathway`` at ``lr_pet``
    (default ``lr_adapters``) and ``head`` at ``lr_head``. ``modality_dropout`` gives the
    probabilities (CT only, PET only, both) for samples that have both images in training.
    ``pet_skips`` (:data:`PET_SKIPS`): ``"image"`` (default) adds the PET copy of the image
    skip ``encoder1``; ``"image+tokens"`` (UNETR only) also PET copies of the token skips
    ``encoder2``-``encoder4``, each with its own weight from 0 (in ``pet_pathway``).
    """

    modalities: ClassVar[tuple[str, ...]] = ("ct", "pet")

    def __init__(
        self,
        backbone: SegmentationBackbone,
        *,
        r: int = 8,
        lora_alpha: float = 16,
        lora_dropout: float = 0.0,
        use_dora: bool = False,
        head_hidden: int | None = 128,
        modality_dropout: Sequence[float] = (0.2, 0.2, 0.6),
        weight_survival: float = 1.0,
        lr_adapters: float = 1e-4,
        lr_pet: float | None = None,
        lr_head: float = 1e-4,
        pet_skips: str = "image",
    ) -> None:
        _check_ct_backbone(backbone, "pemma")
        if pet_skips not in PET_SKIPS:
            raise ValueError(f"pet_skips must be one of {PET_SKIPS}, got {pet_skips!r}")
        swin = isinstance(backbone, SwinUNETRBackbone)
        if swin and pet_skips != "image":
            raise ValueError(
                "pet_skips='image+tokens' needs a UNETR (unetr_ct, unetr_tiny): Swin UNETR's "
                "skips come from one encoder that sees the adapted (CT, PET) input, not from "
                "separate PET tokens; use pet_skips='image' there"
            )
        dropout = tuple(float(p) for p in modality_dropout)
        if len(dropout) != 3 or min(dropout) < 0 or abs(sum(dropout) - 1) > 1e-6:
            raise ValueError(
                "modality_dropout must be three probabilities (ct only, pet only, both) "
                f"summing to 1, got {modality_dropout}"
            )
        # the PET pathway starts from the CT one (copies taken before peft touches it)
        pet_input = make_input_adapter() if swin else copy.deepcopy(backbone.patch_embedding)
        pet_skip = copy.deepcopy(backbone.skip_encoder)
        pet_token_skips = (
            [copy.deepcopy(e) for e in backbone.token_skip_encoders]
            if pet_skips == "image+tokens"
            else None
        )
        self.targets = backbone.lora_targets()
        config = LoraConfig(
            r=r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=self.targets,
            use_dora=use_dora,
            bias="none",
        )
        peft_backbone = get_peft_model(backbone, config)  # freezes every non-adapter weight
        self.head = make_risk_head(backbone.feature_dim, head_hidden)
        if swin:
            self.model = PemmaSwinNet(peft_backbone, pet_input, pet_skip, self.head, dropout)
        else:
            self.model = PemmaNet(
                peft_backbone, pet_input, pet_skip, self.head, dropout, pet_token_skips
            )
        for module in (pet_input, pet_skip, self.head, *(pet_token_skips or [])):
            self._set_trainable(module, True)
        self.pet_skips = pet_skips
        self.family = "swin_unetr" if swin else "unetr"
        self.r, self.lora_alpha, self.use_dora = r, lora_alpha, use_dora
        self.lr_adapters, self.lr_head = lr_adapters, lr_head
        self.lr_pet = lr_adapters if lr_pet is None else lr_pet
        self.criterion = SegmentationSurvivalLoss(weight_survival)
        self.model.train()

    def adapter_parameters(self) -> list[nn.Parameter]:
        """LoRA A and B (and DoRA magnitudes) of the attention projections."""
        return [p for p in self.model.backbone.parameters() if p.requires_grad]

    def pet_parameters(self) -> list[nn.Parameter]:
        """The PET pathway: E^P (UNETR: kernel, bias, position embeddings) or the input
        adapter (Swin), the PET skip copy and beta."""
        return self.model.pet_pathway()

    def param_groups(self) -> list[dict]:
        return [
            {"name": "adapters", "params": self.adapter_parameters(), "lr": self.lr_adapters},
            {"name": "pet_pathway", "params": self.pet_parameters(), "lr": self.lr_pet},
            {"name": "head", "params": list(self.head.parameters()), "lr": self.lr_head},
        ]

    def loss(
        self, output: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Dice-CE(segmentation, mask) + weight_survival * Cox(risk, time, event)."""
        return self.criterion(output, target)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor of the model by its state-dict name (adapters, PET
        pathway, beta, head), plus the buffers outside the frozen backbone (the running
        statistics of a batch-normed PET skip copy, which training changes): what
        ``save_adapters`` writes."""
        state = {
            name: p.detach().cpu().contiguous()
            for name, p in self.model.named_parameters()
            if p.requires_grad
        }
        for name, buffer in self.model.named_buffers():
            if not name.startswith("backbone."):
                state[name] = buffer.detach().cpu().contiguous()
        return state

    def save_adapters(self, directory: str | Path) -> list[Path]:
        """Write the trainable state alone to ``directory``; returns the files.

        ``pemma_trainable.safetensors`` (adapters, PET pathway, beta, head) and
        ``pemma_config.json`` (backbone family, rank, alpha, DoRA, targets). The frozen CT
        network is not written: load it from its own checkpoint, then call
        ``load_adapters``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state_dict(), str(directory / WEIGHTS_FILE))
        config = {
            "method": "pemma",
            "backbone_family": self.family,
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "use_dora": self.use_dora,
            "target_modules": self.targets,
            "pet_skips": self.pet_skips,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return [directory / CONFIG_FILE, directory / WEIGHTS_FILE]

    def load_adapters(self, directory: str | Path) -> None:
        """Load what ``save_adapters`` wrote into this model (same backbone, same options)."""
        path = Path(directory) / WEIGHTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no PEMMA adapters here; run save_adapters first")
        state = load_file(str(path))
        expected = {k: v.shape for k, v in self.trainable_state_dict().items()}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k])
        if missing or unexpected or wrong:
            raise ValueError(
                f"{path}: adapters do not fit this model (missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}, other shape {wrong[:5]}); build Pemma with the options of "
                f"{Path(directory) / CONFIG_FILE}"
            )
        self.model.load_state_dict(state, strict=False)

    def merged_model(self) -> _PemmaNetBase:
        """A copy whose backbone is a plain ``UNETRBackbone`` / ``SwinUNETRBackbone`` with
        LoRA/DoRA folded into the attention Linear layers (``W + scaling * B @ A``; DoRA
        renormalised per output row), by ``lora.merge_adapters``."""
        merged = copy.deepcopy(self.model)
        merged.backbone = merge_adapters(self.model.backbone)
        return merged


class SegmentationPrognosisNet(nn.Module):
    """A UNETR or Swin UNETR on the channel stack of ``modalities`` + a prognosis head on
    its pooled features (``segment_and_pool``: UNETR's mean final token, Swin's mean deepest
    map): ``inputs`` -> ``{"segmentation" (B, 1, *img_size), "risk" (B,)}``.

    Each modality is ``(B, 1, *img_size)``; a modality absent from ``inputs`` or not present
    for a sample (``inputs[f"{name}_present"]``) is a zero channel; a sample with none of
    them is an error.
    """

    def __init__(
        self, backbone: SegmentationBackbone, head: nn.Module, modalities: Sequence[str]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.modalities = tuple(modalities)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = _batch_size(inputs, self.modalities)
        img_size = self.backbone.img_size
        reference = next(inputs[m] for m in self.modalities if m in inputs)
        present_any = torch.zeros(batch, dtype=torch.bool)
        channels = []
        for name in self.modalities:
            present = _presence(inputs, name, batch)
            present_any |= present
            if name not in inputs:
                channels.append(reference.new_zeros(batch, 1, *img_size))
                continue
            check_volume(inputs[name], 1, img_size, name)
            keep = present.to(device=reference.device, dtype=reference.dtype)
            channels.append(inputs[name] * keep.view(-1, 1, 1, 1, 1))
        missing = torch.nonzero(~present_any).flatten().tolist()
        if missing:
            raise ValueError(f"samples {missing} have none of {list(self.modalities)}")
        segmentation, pooled = self.backbone.segment_and_pool(torch.cat(channels, dim=1))
        return {"segmentation": segmentation, "risk": self.head(pooled).squeeze(-1)}

    def train(self, mode: bool = True) -> SegmentationPrognosisNet:
        super().train(mode)
        if mode:
            _keep_frozen_batchnorm_in_eval(self)
        return self


def inflate_inputs(ct: SegmentationBackbone, in_channels: int) -> SegmentationBackbone:
    """A backbone like ``ct`` (same class and config) with ``in_channels`` inputs and
    ``ct``'s weights; every kernel whose input-channel count differs (the patch embedding,
    ``encoder1``'s conv1 and 1x1 residual conv3) is inflated with ``inflate_stem``."""
    wide = type(ct)(**{**ct.config, "in_channels": in_channels})
    target = wide.net.state_dict()
    state = {}
    for key, value in ct.net.state_dict().items():
        if value.shape != target[key].shape:
            if value.shape[0] != target[key].shape[0] or value.shape[2:] != target[key].shape[2:]:
                raise ValueError(
                    f"{key}: {tuple(value.shape)} cannot inflate to {target[key].shape}"
                )
            value = inflate_stem(value, in_channels)
        state[key] = value
    wide.net.load_state_dict(state)
    return wide


class _SegmentationPrognosisBaseline(MultimodalMethod):
    """Shared parts of the baselines: full training of a backbone + head, the shared loss."""

    def __init__(
        self,
        backbone: SegmentationBackbone,
        head_hidden: int | None,
        weight_survival: float,
        lr_backbone: float,
        lr_head: float,
    ) -> None:
        self.head = make_risk_head(backbone.feature_dim, head_hidden)
        self.model = SegmentationPrognosisNet(backbone, self.head, self.modalities)
        self._set_trainable(self.model, True)
        self.lr_backbone, self.lr_head = lr_backbone, lr_head
        self.criterion = SegmentationSurvivalLoss(weight_survival)
        self.model.train()

    def param_groups(self) -> list[dict]:
        return [
            {
                "name": "backbone",
                "params": list(self.model.backbone.parameters()),
                "lr": self.lr_backbone,
            },
            {"name": "head", "params": list(self.head.parameters()), "lr": self.lr_head},
        ]

    def loss(
        self, output: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Dice-CE(segmentation, mask) + weight_survival * Cox(risk, time, event)."""
        return self.criterion(output, target)


@register_method(
    "early_fusion",
    paper="baseline of paper 5, PEMMA (arXiv 2504.13645)",
    family="segmentation_survival",
    tasks=("segmentation+survival",),
    backbones="segmentation",
    needs_inputs=("ct",),
    tunable={"lr_backbone": 1e-4, "lr_head": 1e-4},
)
class EarlyFusion(_SegmentationPrognosisBaseline):
    """Early fusion (paper 5's baseline): a UNETR or Swin UNETR on the (CT, PET) stack, all
    weights trained.

    Built from the CT network ``backbone``: same architecture with 2 input channels, its
    weights copied and the input kernels inflated (``inherit_weights=True``) or MONAI's random
    initialisation (``inherit_weights=False``). The given backbone is not modified.
    """

    modalities: ClassVar[tuple[str, ...]] = ("ct", "pet")

    def __init__(
        self,
        backbone: SegmentationBackbone,
        *,
        inherit_weights: bool = True,
        head_hidden: int | None = 128,
        weight_survival: float = 1.0,
        lr_backbone: float = 1e-4,
        lr_head: float = 1e-4,
    ) -> None:
        _check_ct_backbone(backbone, "early_fusion")
        if inherit_weights:
            fused = inflate_inputs(backbone, 2)
        else:
            fused = type(backbone)(**{**backbone.config, "in_channels": 2})
        super().__init__(fused, head_hidden, weight_survival, lr_backbone, lr_head)


@register_method(
    "ct_only",
    paper="single-modality reference of paper 5, PEMMA (arXiv 2504.13645)",
    family="segmentation_survival",
    tasks=("segmentation+survival",),
    backbones="segmentation",
    needs_inputs=("ct",),
    tunable={"lr_backbone": 1e-5, "lr_head": 1e-4},
)
class CTOnly(_SegmentationPrognosisBaseline):
    """The CT UNETR or Swin UNETR fully fine-tuned on CT alone, with PEMMA's prognosis head
    (paper 5's single-modality reference). ``backbone`` is trained in place."""

    modalities: ClassVar[tuple[str, ...]] = ("ct",)

    def __init__(
        self,
        backbone: SegmentationBackbone,
        *,
        head_hidden: int | None = 128,
        weight_survival: float = 1.0,
        lr_backbone: float = 1e-5,
        lr_head: float = 1e-4,
    ) -> None:
        _check_ct_backbone(backbone, "ct_only")
        super().__init__(backbone, head_hidden, weight_survival, lr_backbone, lr_head)
