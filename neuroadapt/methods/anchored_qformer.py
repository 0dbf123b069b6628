"""``anchored_qformer``: modality-anchored interaction with a modality-aware Q-former (paper 4).

Paper 4: "Joint Adaptation of Uni-modal Foundation Models for Multi-modal Alzheimer's Disease
Diagnosis", ICLR 2026, OpenReview gPTjQxC74G. Phase 1 adapts one foundation model per
modality on its own (sMRI, fMRI, clinical text, genetics); phase 2, built here, rotates each
modality as the *anchor* ``m^``. With ``M' = M \\ {m^}`` the auxiliary modalities:

- ``Z_m = Linear(F_m(X_m))``: the frozen phase-1 encoder's output tokens of ``m``, projected
  to the anchor's token width ``C``;
- ``X^_m = CrossAttn(Q = X_uq^m, K = V = Z_m)``: ``N_q`` uni-modal queries per auxiliary;
- ``X^_c = CrossAttn(Q = X_cq, K = V = Concat_m X^_m)``: ``N_q`` cross-modal queries;
- ``H_a = Concat(X^_m ..., X^_c)`` in ``R^{(|M'| + 1) N_q x C}``, prepended to the anchor's
  embedded input tokens and run through the anchor's (frozen) transformer blocks with LoRA
  on their attention projections (peft); a head on the mean of the anchor-token outputs gives
  the round's logits ``(B, num_outputs)``;
- the rounds' predictions are aggregated into the final diagnosis.

The Q-former is written by hand: BLIP-2's ``Blip2QFormerModel`` (transformers) has one query
set cross-attending one encoder's features and projects into one (the LLM's) space. Here each
auxiliary modality has its own query set and cross-attention, a second query set attends
across the uni-modal outputs, every anchor has its own Q-former projecting into its own token
width, and absent modalities are masked per sample; none of that is a configuration of the
library Q-former. Its attention is ``torch.nn.MultiheadAttention`` (a library block), not
MONAI's ``CrossAttentionBlock``, because the latter has no key-padding mask, which missing
modalities and padded text tokens need. Following the formulas, a Q-former layer is the
cross-attention alone (no query self-attention or feed-forward as in BLIP-2).

Choices where the paper is silent (all configurable):

- Auxiliary features are the frozen phase-1 encoders' final (normed) tokens, computed once per
  batch with the anchors' LoRA switched off (the paper extracts them "by the Phase 1
  models") and shared by every round; no gradient flows into them.
- One Q-former, one LoRA set and one head per anchor: the parameter sets of the rounds are
  disjoint. Training uses each round's own cross-entropy ``L_m^`` averaged over the samples
  whose anchor is present (the paper's ``1/N_m^`` sum), and the method's loss is the mean of
  the rounds' losses (``loss_on="rounds"``; ``"aggregate"`` trains the aggregated logits).
- Aggregation (``aggregate="prob"``, default): the mean of the present rounds' probabilities
  (sigmoid per output for binary/multilabel, softmax for multiclass), returned as logits
  (``logit(mean p)`` resp. ``log(mean p)``) so that ``loss`` and metrics read it like any
  other logits; ``"logit"`` averages logits instead.
- Missing modalities (the paper's incomplete setting; it does not say how): an input
  ``inputs[f"{m}_present"]`` (bool ``(B,)``) marks per-sample presence; a modality absent from
  the mapping is absent for every sample. An absent auxiliary's input is replaced by zeros
  before its encoder (its content can never leak in), its uni-modal query outputs are set to
  zero, and its tokens are key-padded out of the cross-modal attention; a sample without any
  auxiliary gets ``X^_c = 0`` too. So the anchor sees constant zero tokens in place of an
  absent modality. A round whose anchor is absent for a sample is left out of that sample's
  aggregation and loss. A sample with none of the anchor modalities present raises
  ``ValueError`` (with the default anchors, every modality: a sample needs at least one).
- Padded token inputs (precomputed text embeddings) may come with ``inputs[f"{m}_mask"]``
  (bool ``(B, L)``, ``True`` = real token): padded keys are left out of the uni-modal
  cross-attention, of the anchor's self-attention and of its pooling; a sample whose mask
  has no real token (an empty report) counts as absent for that modality.
- ``num_queries=0`` builds no Q-former: each round is then its anchor (with LoRA) plus its
  head, and with LoRA at its zero initialisation the method equals ``late_fusion`` with the
  same heads and aggregation (the paper: "0 queries degenerates to late fusion").
- Query initialisation: normal, std 0.02 (BLIP-2's); heads are linear (the phase-1 heads of
  the paper); learning rates per group (``qformer``, ``lora``, ``heads``) are not given in
  the summary and default to 1e-4, 1e-4, 1e-3.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from neuroadapt.methods.base import MultimodalMethod, Task, classification_loss, frozen_pass
from neuroadapt.methods.lora import default_targets
from neuroadapt.methods.registry import register_method
from neuroadapt.models.classifier import make_head
from neuroadapt.models.text import masked_mean

__all__ = [
    "AGGREGATIONS",
    "AnchoredQFormer",
    "AnchoredQFormerModel",
    "ModalityAwareQFormer",
    "MultimodalEncoderMethod",
    "aggregate_logits",
    "batch_presence",
    "encode_pooled",
    "encode_tokens",
    "rounds_loss",
    "token_mask",
    "zero_absent",
]

AGGREGATIONS = ("prob", "logit")
LOSS_ON = ("rounds", "aggregate")


# --- inputs: presence, masks, validation -------------------------------------------------


def batch_presence(
    inputs: Mapping[str, torch.Tensor], names: Sequence[str], require: Sequence[str] | None = None
) -> tuple[int, dict[str, torch.Tensor]]:
    """Batch size and per-sample presence ``{name: bool (B,)}`` of the modalities ``names``.

    A modality absent from ``inputs`` is absent for every sample; one present has
    ``inputs[f"{name}_present"]`` (bool ``(B,)``) or, without it, is present for all; a
    sample whose padding mask ``inputs[f"{name}_mask"]`` has no real token is absent. Raises
    ``ValueError`` when a sample has none of the modalities in ``require`` (default:
    ``names``; empty: none required), naming the samples.
    """
    given = [m for m in names if m in inputs]
    if not given:
        raise ValueError(f"the inputs hold none of the modalities {list(names)}")
    batch = int(inputs[given[0]].shape[0])
    device = inputs[given[0]].device
    present: dict[str, torch.Tensor] = {}
    for m in names:
        if m not in inputs:
            present[m] = torch.zeros(batch, dtype=torch.bool, device=device)
            continue
        if inputs[m].shape[0] != batch:
            raise ValueError(f"{m}: batch size {inputs[m].shape[0]}, {given[0]}: {batch}")
        flag = inputs.get(f"{m}_present")
        if flag is None:
            present[m] = torch.ones(batch, dtype=torch.bool, device=device)
        else:
            if tuple(flag.shape) != (batch,):
                raise ValueError(f"{m}_present must have shape ({batch},), got {tuple(flag.shape)}")
            present[m] = flag.to(device=device, dtype=torch.bool)
        mask = inputs.get(f"{m}_mask")
        if mask is not None:
            # a padded input without any real token (an empty report) counts as absent,
            # as brain_adapter does; it would otherwise give NaN attention
            present[m] = present[m] & mask.to(device=device, dtype=torch.bool).any(dim=1)
    required = list(names if require is None else require)
    some = (
        torch.stack([present[m] for m in required], dim=1).any(dim=1)
        if required
        else torch.ones(batch, dtype=torch.bool, device=device)  # nothing required
    )
    if not bool(some.all()):
        missing = torch.nonzero(~some).flatten().tolist()
        raise ValueError(
            f"sample(s) {missing} of the batch have none of the modalities {required} present; "
            "every sample needs at least one of them: drop those samples or supply a modality"
        )
    return batch, present


def zero_absent(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, ...)`` with absent samples replaced by zeros, so that neither their content
    nor a NaN placeholder reaches an encoder (``where``, not a product: NaN * 0 is NaN)."""
    keep = present.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def token_mask(
    inputs: Mapping[str, torch.Tensor], name: str, present: torch.Tensor
) -> torch.Tensor | None:
    """The padding mask ``inputs[f"{name}_mask"]`` (bool ``(B, L)``, ``True`` = real token), with
    absent samples fully unmasked (their zeroed tokens are discarded later; an all-padding
    row would give NaN attention)."""
    mask = inputs.get(f"{name}_mask")
    if mask is None:
        return None
    return mask.bool() | ~present.unsqueeze(1)


def _takes_mask(encoder: nn.Module, method: str) -> bool:
    return "mask" in inspect.signature(getattr(encoder, method)).parameters


def encode_tokens(
    encoder: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Output tokens ``(B, N, D)`` of a token encoder (``embed`` + ``forward_tokens``)."""
    tokens = encoder.embed(x)
    if mask is None:
        return encoder.forward_tokens(tokens)
    if not _takes_mask(encoder, "forward_tokens"):
        raise ValueError(f"{type(encoder).__name__} takes no padding mask, but one was given")
    return encoder.forward_tokens(tokens, mask=mask)


def encode_pooled(
    encoder: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Pooled features ``(B, D)`` of any encoder (``forward``), passing a padding mask on."""
    if mask is None:
        return encoder(x)
    if not _takes_mask(encoder, "forward"):
        raise ValueError(f"{type(encoder).__name__} takes no padding mask, but one was given")
    return encoder(x, mask=mask)


def _check_names(names: Sequence[str]) -> None:
    for m in names:
        if not m or "." in m or m.endswith(("_present", "_mask")):
            raise ValueError(
                f"modality name {m!r} cannot be used: it must be non-empty, without '.', "
                "and not end in _present or _mask (those keys carry flags and masks)"
            )


# --- aggregation and loss -------------------------------------------------------------------


def aggregate_logits(
    logits: torch.Tensor, present: torch.Tensor, task: Task, how: str = "prob"
) -> torch.Tensor:
    """Aggregate per-round logits ``(B, R, O)`` over the rounds present ``(B, R)`` -> ``(B, O)``.

    ``how="logit"``: mean of the present rounds' logits. ``how="prob"``: mean of their
    probabilities, returned as logits: ``logit(mean sigmoid)`` per output (binary,
    multilabel) or ``log(mean softmax)`` (multiclass; a valid logit vector whose softmax is
    the mean probability). Computed in log space (log-sum-exp), so it is exact and finite
    for saturated rounds.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, not {how!r}")
    if not bool(present.any(dim=1).all()):
        raise ValueError("a sample has no round to aggregate")
    weights = present.to(logits.dtype).unsqueeze(-1)  # (B, R, 1)
    count = weights.sum(dim=1)  # (B, 1)
    if how == "logit":
        return (logits * weights).sum(dim=1) / count
    log_w, log_n = weights.log(), count.log()  # log 0 = -inf drops absent rounds

    def log_mean(log_p: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(log_p + log_w, dim=1) - log_n

    if task == "multiclass":
        return log_mean(torch.log_softmax(logits, dim=-1))
    f = nn.functional
    return log_mean(f.logsigmoid(logits)) - log_mean(f.logsigmoid(-logits))


def rounds_loss(
    task: Task, logits: torch.Tensor, present: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Mean over rounds of each round's loss on the samples it is present for.

    ``logits`` ``(B, R, O)``, ``present`` bool ``(B, R)``, ``target`` ``(B,)`` or ``(B, L)``.
    """
    losses = [
        classification_loss(task, logits[present[:, r], r], target[present[:, r]])
        for r in range(logits.shape[1])
        if bool(present[:, r].any())
    ]
    return torch.stack(losses).mean()


# --- the modality-aware Q-former --------------------------------------------------------


class ModalityAwareQFormer(nn.Module):
    """Projects auxiliary modalities' tokens into one anchor's token space (hand-written).

    For each auxiliary ``m``: ``Z_m = proj_m(tokens_m)`` ``(B, N_m, C)``, then ``N_q``
    learnable uni-modal queries cross-attend to ``Z_m``; ``N_q`` cross-modal queries
    cross-attend to all uni-modal outputs. Output ``H_a`` ``(B, (|M'| + 1) N_q, C)``, the
    uni-modal blocks in the order of ``aux_dims`` followed by the cross-modal block.

    Parameters: per auxiliary ``D_m C + C`` (projection), ``N_q C`` (queries) and
    ``4 C^2 + 4 C`` (``nn.MultiheadAttention`` with biases); plus ``N_q C + 4 C^2 + 4 C``.
    """

    def __init__(
        self,
        anchor_dim: int,
        aux_dims: Mapping[str, int],
        num_queries: int = 16,
        heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {num_queries}")
        if not aux_dims:
            raise ValueError("a Q-former needs at least one auxiliary modality")
        if anchor_dim % heads != 0:
            raise ValueError(
                f"the anchor's token width ({anchor_dim}) must be divisible by the Q-former's "
                f"heads ({heads}); set qformer_heads to a divisor of it"
            )
        c = anchor_dim
        self.aux = tuple(aux_dims)
        self.num_queries = num_queries
        self.dim = c
        self.proj = nn.ModuleDict({m: nn.Linear(d, c) for m, d in aux_dims.items()})
        self.unimodal_queries = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(num_queries, c) * 0.02) for m in aux_dims}
        )
        self.unimodal_attn = nn.ModuleDict(
            {
                m: nn.MultiheadAttention(c, heads, dropout=dropout, batch_first=True)
                for m in aux_dims
            }
        )
        self.cross_queries = nn.Parameter(torch.randn(num_queries, c) * 0.02)
        self.cross_attn = nn.MultiheadAttention(c, heads, dropout=dropout, batch_first=True)

    @property
    def num_tokens(self) -> int:
        """Length of ``H_a``: ``(|M'| + 1) N_q``."""
        return (len(self.aux) + 1) * self.num_queries

    def forward(
        self,
        tokens: Mapping[str, torch.Tensor],
        present: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """``H_a`` ``(B, (|M'| + 1) N_q, C)`` from auxiliary tokens ``{m: (B, N_m, D_m)}``.

        ``present[m]`` (bool ``(B,)``) marks the samples that have ``m``; an auxiliary missing
        from ``tokens`` is absent for all. ``masks[m]`` (bool ``(B, N_m)``, ``True`` = real
        token) keeps padded tokens out of ``m``'s cross-attention.
        """
        masks = masks or {}
        batch = next(iter(present.values())).shape[0]
        zeros = self.cross_queries.new_zeros(batch, self.num_queries, self.dim)
        outs, flags = [], []
        for m in self.aux:
            if m not in tokens:
                outs.append(zeros)
                flags.append(torch.zeros(batch, dtype=torch.bool, device=zeros.device))
                continue
            z = self.proj[m](tokens[m])  # (B, N_m, C)
            queries = self.unimodal_queries[m].unsqueeze(0).expand(batch, -1, -1)
            mask = masks.get(m)
            out, _ = self.unimodal_attn[m](
                queries, z, z, key_padding_mask=None if mask is None else ~mask, need_weights=False
            )
            # an absent modality contributes constant zero tokens, whatever its input held
            outs.append(torch.where(present[m].view(-1, 1, 1), out, torch.zeros_like(out)))
            flags.append(present[m])
        keys = torch.cat(outs, dim=1)  # (B, |M'| N_q, C)
        flag = torch.stack(flags, dim=1)  # (B, |M'|)
        some = flag.any(dim=1)  # (B,)
        # key padding: True = ignore. A sample without any auxiliary would have every key
        # ignored (NaN softmax): attend to its zero keys instead and zero the result below.
        ignore = (~flag).repeat_interleave(self.num_queries, dim=1) & some.unsqueeze(1)
        queries = self.cross_queries.unsqueeze(0).expand(batch, -1, -1)
        cross, _ = self.cross_attn(queries, keys, keys, key_padding_mask=ignore, need_weights=False)
        cross = torch.where(some.view(-1, 1, 1), cross, torch.zeros_like(cross))
        return torch.cat([*outs, cross], dim=1)


# --- shared method machinery ---------------------------------------------------------------


class MultimodalEncoderMethod(MultimodalMethod):
    """What ``anchored_qformer``, ``late_fusion`` and ``feature_concat`` share.

    Constructed from a mapping modality name -> encoder (``forward(x) -> (B, D)`` and
    ``feature_dim``; token encoders also ``embed`` / ``forward_tokens``). Encoders are
    frozen (the phase-1 uni-modal models). ``self.model(inputs)`` returns ``"logits"``
    ``(B, num_outputs)`` and, for methods with rounds (one per anchor or modality),
    ``"round_logits"`` ``(B, R, num_outputs)`` and ``"round_present"`` bool ``(B, R)``; the
    round names are ``self.rounds``. ``loss`` takes ``{"label": target}`` or the target.
    """

    loss_on: str = "aggregate"

    def _setup(self, encoders: Mapping[str, nn.Module], task: Task, num_classes: int) -> None:
        if task not in ("binary", "multiclass", "multilabel"):
            raise ValueError(f"task must be binary, multiclass or multilabel, not {task!r}")
        if not encoders:
            raise ValueError("no encoder given: pass a mapping modality name -> encoder")
        _check_names(list(encoders))
        for m, encoder in encoders.items():
            if not hasattr(encoder, "feature_dim"):
                raise ValueError(f"encoder of {m!r} has no feature_dim")
            self._set_trainable(encoder, False)  # phase-1 models stay frozen
        self.task: Task = task
        self.num_outputs = 1 if task == "binary" else num_classes
        # instance-level: what this method reads is the encoders' modalities
        self.modalities = tuple(encoders)  # type: ignore[misc]
        self.rounds: tuple[str, ...] = ()

    def loss(
        self, output: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor] | torch.Tensor
    ) -> torch.Tensor:
        """Mean loss of one batch: per round (``loss_on="rounds"``) or on ``"logits"``."""
        label = target["label"] if isinstance(target, Mapping) else target
        if self.loss_on == "rounds" and "round_logits" in output:
            return rounds_loss(self.task, output["round_logits"], output["round_present"], label)
        return classification_loss(self.task, output["logits"], label)

    def load_phase1_heads(self, heads: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Start each per-modality head (one per anchor or modality round) from the head of
        that modality's phase-1 model (paper 4 reuses them); a method without per-modality
        heads (``feature_concat``) keeps its own. A head of another shape (another
        ``head_hidden``) is an error, not a silent fresh start."""
        own = getattr(self.model, "heads", None)
        if own is None:
            return
        for m, state in heads.items():
            if m not in own:
                continue
            try:
                own[m].load_state_dict(dict(state), strict=True)
            except RuntimeError as error:
                raise ValueError(
                    f"the phase-1 head of {m!r} does not fit {self.name}'s head ({error}); "
                    "give both the same head_hidden (training.head_hidden)"
                ) from None

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained tensors alone (adapters, Q-formers, heads), keyed as in the model."""
        return {
            name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad
        }

    def save_trainable(self, path: str | Path) -> Path:
        """Write the trained tensors (not the frozen encoders) to a safetensors file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        save_file(tensors, str(path), metadata={"method": self.name})
        return path

    def load_trainable(self, path: str | Path) -> None:
        """Load tensors written by ``save_trainable`` into this (same-encoder) method."""
        path = Path(path)
        state = load_file(str(path))
        expected = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        unexpected = sorted(set(state) - set(expected))
        missing = sorted(set(expected) - set(state))
        shapes = [k for k in state if k in expected and state[k].shape != expected[k].shape]
        if unexpected or missing or shapes:
            raise ValueError(
                f"{path}: trained tensors do not fit this model (unexpected {unexpected[:5]}, "
                f"missing {missing[:5]}, other shape {shapes[:5]}); build the method with the "
                "same encoders and options as the one that saved them"
            )
        with torch.no_grad():
            for name, tensor in state.items():
                expected[name].copy_(tensor)


# --- the anchored model ------------------------------------------------------------------------


class AnchoredQFormerModel(nn.Module):
    """Encoders (anchors peft-wrapped), one Q-former and one head per anchor.

    ``forward(inputs)`` -> ``{"logits": (B, O), "round_logits": (B, A, O),
    "round_present": (B, A)}`` with ``A = len(anchors)``.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        anchors: Sequence[str],
        qformers: Mapping[str, ModalityAwareQFormer],
        heads: Mapping[str, nn.Module],
        task: Task,
        num_outputs: int,
        aggregate: str,
    ) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.encoders = nn.ModuleDict(dict(encoders))
        self.qformers = nn.ModuleDict(dict(qformers))
        self.heads = nn.ModuleDict(dict(heads))
        self.anchors = tuple(anchors)
        self.task: Task = task
        self.aggregate = aggregate

    def raw(self, name: str) -> nn.Module:
        """The encoder of ``name`` itself (inside its peft wrapper, LoRA layers included)."""
        encoder = self.encoders[name]
        return encoder.get_base_model() if isinstance(encoder, PeftModel) else encoder

    @contextlib.contextmanager
    def phase1(self, name: str) -> Iterator[None]:
        """Run ``name``'s encoder as the phase-1 model: its anchor LoRA switched off."""
        encoder = self.encoders[name]
        if isinstance(encoder, PeftModel):
            with encoder.disable_adapter():
                yield
        else:
            yield

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = list(self.encoders)
        batch, present = batch_presence(inputs, names, require=self.anchors)
        xs = {m: zero_absent(inputs[m], present[m]) for m in names if m in inputs}
        masks = {m: token_mask(inputs, m, present[m]) for m in xs}
        aux_tokens: dict[str, torch.Tensor] = {}
        if self.qformers:
            # frozen phase-1 features, computed once and shared by every anchor round
            with frozen_pass(*xs.values()):
                for m in xs:
                    with self.phase1(m):
                        aux_tokens[m] = encode_tokens(self.raw(m), xs[m], masks[m])
        round_logits = []
        for a in self.anchors:
            if a not in xs:  # absent for the whole batch: a placeholder, masked out below
                round_logits.append(next(iter(xs.values())).new_zeros(batch, self.num_outputs))
                continue
            round_logits.append(self._anchor_round(a, xs, masks, present, aux_tokens))
        logits = torch.stack(round_logits, dim=1)  # (B, A, O)
        flags = torch.stack([present[a] for a in self.anchors], dim=1)  # (B, A)
        return {
            "logits": aggregate_logits(logits, flags, self.task, self.aggregate),
            "round_logits": logits,
            "round_present": flags,
        }

    def _anchor_round(
        self,
        anchor: str,
        xs: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor | None],
        present: Mapping[str, torch.Tensor],
        aux_tokens: Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        """One round: ``H_a`` prepended to the anchor's tokens -> LoRA'd blocks -> head."""
        encoder = self.raw(anchor)
        tokens = encoder.embed(xs[anchor])  # (B, N, C)
        mask = masks[anchor]
        prepended = 0
        if anchor in self.qformers:
            qformer = self.qformers[anchor]
            aux = {m: aux_tokens[m] for m in qformer.aux if m in aux_tokens}
            h_a = qformer(aux, present, masks)  # (B, K, C)
            prepended = h_a.shape[1]
            tokens = torch.cat([h_a.to(tokens.dtype), tokens], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(mask.shape[0], prepended), mask], dim=1)
        if mask is None:
            out = encoder.forward_tokens(tokens)
        else:
            if not _takes_mask(encoder, "forward_tokens"):
                raise ValueError(f"{anchor}: its encoder takes no padding mask, but one was given")
            out = encoder.forward_tokens(tokens, mask=mask)
        pooled = masked_mean(out[:, prepended:], masks[anchor])  # anchor tokens only
        return self.heads[anchor](pooled)


@register_method(
    "anchored_qformer",
    paper="paper 4 (ICLR 2026, OpenReview gPTjQxC74G)",
    family="multimodal",
    tasks=("binary",),
    backbones="vit",
    tunable={"lr_qformer": 1e-4, "lr_lora": 1e-4, "lr_heads": 1e-3, "r": 4},
    uses_phase1=True,
)
class AnchoredQFormer(MultimodalEncoderMethod):
    """Paper 4's modality-anchored interaction (see the module docstring).

    ``encoders`` maps modality name -> frozen phase-1 token encoder (``ViTBackbone``,
    ``TabularTokenEncoder``, ``SequenceTokenEncoder`` ...). ``anchors`` (default: every
    modality) are the rotating anchors; each gets peft LoRA (rank ``r``; ``r=0``: none) on
    the layers its encoder declares through ``lora_targets()`` (or ``target_modules[anchor]``),
    a ``ModalityAwareQFormer`` over the other modalities (``num_queries`` per query set; 0:
    none) and a head (linear, or an MLP with ``head_hidden`` units).

    Parameter groups: ``qformer`` (``lr_qformer``), ``lora`` (``lr_lora``), ``heads``
    (``lr_heads``); empty groups are left out.
    """

    loss_on = "rounds"

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        *,
        task: Task = "binary",
        num_classes: int = 2,
        anchors: Sequence[str] | None = None,
        num_queries: int = 16,
        qformer_heads: int = 4,
        qformer_dropout: float = 0.0,
        r: int = 4,
        lora_alpha: float = 8,
        lora_dropout: float = 0.0,
        target_modules: Mapping[str, list[str]] | None = None,
        head_hidden: int | None = None,
        aggregate: str = "prob",
        loss_on: str = "rounds",
        lr_qformer: float = 1e-4,
        lr_lora: float = 1e-4,
        lr_heads: float = 1e-3,
    ) -> None:
        self._setup(encoders, task, num_classes)
        anchors = tuple(encoders) if anchors is None else tuple(anchors)
        unknown = [a for a in anchors if a not in encoders]
        if not anchors or unknown or len(set(anchors)) != len(anchors):
            raise ValueError(
                f"anchors {list(anchors)} must be distinct modalities among {list(encoders)}"
            )
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}, not {aggregate!r}")
        if loss_on not in LOSS_ON:
            raise ValueError(f"loss_on must be one of {LOSS_ON}, not {loss_on!r}")
        if num_queries < 0 or r < 0:
            raise ValueError(f"num_queries and r must be >= 0, got {num_queries} and {r}")
        needs = ("embed", "forward_tokens") if num_queries > 0 else ()
        for m, encoder in encoders.items():
            lacking = [
                f
                for f in needs + (("embed", "forward_tokens") if m in anchors else ())
                if not callable(getattr(encoder, f, None))
            ]
            if lacking:
                raise ValueError(
                    f"encoder of {m!r} ({type(encoder).__name__}) lacks {sorted(set(lacking))}: "
                    "anchored_qformer needs token encoders (ViTBackbone, TabularTokenEncoder, "
                    "SequenceTokenEncoder)"
                )
        dims = {m: int(encoder.feature_dim) for m, encoder in encoders.items()}
        wrapped: dict[str, nn.Module] = dict(encoders)
        for a in anchors:
            if r == 0:
                continue
            targets = (target_modules or {}).get(a) or default_targets(encoders[a])
            if not targets:
                raise ValueError(f"the encoder of anchor {a!r} declares no layer for LoRA")
            config = LoraConfig(
                r=r,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                target_modules=list(targets),
                bias="none",
            )
            wrapped[a] = get_peft_model(encoders[a], config)  # in place; freezes the rest
        qformers = {}
        for a in anchors:
            aux = {m: d for m, d in dims.items() if m != a}
            if num_queries > 0 and aux:
                qformers[a] = ModalityAwareQFormer(
                    dims[a], aux, num_queries, qformer_heads, qformer_dropout
                )
        heads = {a: make_head(dims[a], self.num_outputs, head_hidden) for a in anchors}
        self.model = AnchoredQFormerModel(
            wrapped, anchors, qformers, heads, task, self.num_outputs, aggregate
        )
        self.rounds = anchors
        self.anchors = anchors
        self.num_queries, self.r, self.lora_alpha = num_queries, r, lora_alpha
        self.aggregate, self.loss_on = aggregate, loss_on
        self.lr_qformer, self.lr_lora, self.lr_heads = lr_qformer, lr_lora, lr_heads
        self.model.train()

    def qformer_parameters(self) -> list[nn.Parameter]:
        return list(self.model.qformers.parameters())

    def lora_parameters(self) -> list[nn.Parameter]:
        """The trainable peft tensors of the anchors' encoders (``lora_A``, ``lora_B``)."""
        return [p for p in self.model.encoders.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.model.heads.parameters())

    def param_groups(self) -> list[dict]:
        groups = [
            {"name": "qformer", "params": self.qformer_parameters(), "lr": self.lr_qformer},
            {"name": "lora", "params": self.lora_parameters(), "lr": self.lr_lora},
            {"name": "heads", "params": self.head_parameters(), "lr": self.lr_heads},
        ]
        return [g for g in groups if g["params"]]
