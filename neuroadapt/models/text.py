"""Frozen text encoders: report strings -> token embeddings ``(B, L, D)`` and a mask ``(B, L)``.

Paper 2 (Brain-Adapter, arXiv 2501.16282) encodes clinical reports with a frozen LLaMA2-7B;
multimodal methods read its token embeddings as the ``report_text`` input, computed once
outside training (``neuroadapt.methods.base.MultimodalMethod``). Two encoders share one
interface (``TextEncoder.encode``):

- ``HuggingFaceTextEncoder``: any Hugging Face model + tokenizer saved in a local directory
  (LLaMA2, a clinical BERT, ...), loaded with ``local_files_only=True`` (no network at run
  time), frozen, in eval mode, run without gradients.
- ``HashingTextEncoder``: the demo's stand-in that needs no download. Words are hashed into a
  fixed random embedding table; it knows word identity and position and nothing else (no
  synonyms, no negation, no language understanding).

``get_text_encoder(mapping)`` builds either from a config-like mapping.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuroadapt.errors import ConfigError, InputError

__all__ = [
    "HashingTextEncoder",
    "HuggingFaceTextEncoder",
    "TextEncoder",
    "TextEncoding",
    "get_text_encoder",
    "masked_mean",
    "sinusoidal_positions",
]


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the valid tokens: ``(B, L, D)`` with mask ``(B, L)`` (True/1 = valid) -> ``(B, D)``.

    Without a mask every token counts. A row without any valid token gives zeros (instead of
    the 0/0 NaN a plain division would give).
    """
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, L, 1)
    total = (tokens * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1.0)
    return total / count


@dataclass(frozen=True)
class TextEncoding:
    """Token embeddings ``tokens`` ``(B, L, D)`` and ``mask`` ``(B, L)`` (bool, True = token).

    Padded positions hold zeros in ``HashingTextEncoder`` and whatever the model computes in
    ``HuggingFaceTextEncoder``; always pool with the mask.
    """

    tokens: torch.Tensor
    mask: torch.Tensor

    def pooled(self) -> torch.Tensor:
        """Masked mean over tokens: ``(B, D)``."""
        return masked_mean(self.tokens, self.mask)


class TextEncoder(nn.Module):
    """A frozen encoder of report strings. Subclasses set ``dim`` and implement ``_encode``.

    Every parameter is frozen and the module stays in eval mode (``train()`` is a no-op), so
    that dropout never makes the same report encode differently.
    """

    dim: int
    max_length: int

    def _encode(self, texts: list[str]) -> TextEncoding:
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> TextEncoding:
        """``B`` strings -> ``TextEncoding`` (tokens ``(B, L, dim)``, mask ``(B, L)``)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings (one per sample), not one string")
        texts = [str(t) for t in texts]
        if not texts:
            raise ValueError("encode needs at least one text")
        with torch.no_grad():
            return self._encode(texts)

    def pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """``B`` strings -> masked mean of their token embeddings ``(B, dim)``."""
        return self.encode(texts).pooled()

    def forward(self, texts: Sequence[str]) -> TextEncoding:
        return self.encode(texts)

    def train(self, mode: bool = True) -> TextEncoder:
        # frozen: stay in eval mode whatever the caller asks
        return super().train(False)

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Transformer sinusoidal position codes ``(length, dim)`` (Vaswani et al. 2017), values
    in [-1, 1]: ``sin`` on even features, ``cos`` on odd ones."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    frequency = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / max(dim, 1))
    )
    codes = torch.zeros(length, dim, dtype=torch.float64)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return codes.float()


_WORD = re.compile(r"[a-z0-9]+")


class HashingTextEncoder(TextEncoder):
    """Deterministic stand-in text encoder for demos and tests; needs no download.

    A text is lower-cased and split into word tokens (runs of ``a-z0-9``); each word is
    hashed with BLAKE2b (stable across processes, unlike Python's salted ``hash()``) into
    one of ``buckets`` rows of a fixed table of N(0, 1) vectors drawn from NumPy's PCG64
    generator seeded with ``seed``. Token ``i`` of a text is its row plus
    ``position_scale`` times the sinusoidal position code of ``i``. At most ``max_length``
    words are kept. The same text therefore gives the same embeddings in every process.

    It carries word identity and order only: no meaning, synonyms or negation ("no
    atrophy" and "atrophy" share a token), and different words may share a bucket. It stands
    in for a real language model so that the pipeline runs offline; it is not one.
    """

    def __init__(
        self,
        dim: int = 64,
        max_length: int = 64,
        seed: int = 0,
        buckets: int = 4096,
        position_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if dim < 2 or max_length < 1 or buckets < 1:
            raise ValueError(
                f"need dim >= 2, max_length >= 1, buckets >= 1; got {dim}, {max_length}, {buckets}"
            )
        self.dim, self.max_length, self.seed, self.buckets = dim, max_length, seed, buckets
        self.position_scale = position_scale
        table = np.random.Generator(np.random.PCG64(seed)).standard_normal((buckets, dim))
        # buffers, not parameters: nothing here can train, and state_dict() still records them
        self.register_buffer("table", torch.from_numpy(table.astype(np.float32)))
        self.register_buffer("positions", sinusoidal_positions(max_length, dim))

    @staticmethod
    def words(text: str) -> list[str]:
        """The word tokens of ``text``: lower-cased runs of letters and digits."""
        return _WORD.findall(text.lower())

    def bucket(self, word: str) -> int:
        """Row of ``word`` in the table (BLAKE2b digest modulo ``buckets``)."""
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little") % self.buckets

    def _encode(self, texts: list[str]) -> TextEncoding:
        ids = [[self.bucket(w) for w in self.words(t)[: self.max_length]] for t in texts]
        length = max(1, max(len(row) for row in ids))  # an all-empty batch keeps one column
        tokens = torch.zeros(len(texts), length, self.dim)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for b, row in enumerate(ids):
            if row:
                n = len(row)
                tokens[b, :n] = self.table[row] + self.position_scale * self.positions[:n]
                mask[b, :n] = True
        return TextEncoding(tokens, mask)


class HuggingFaceTextEncoder(TextEncoder):
    """A Hugging Face model and tokenizer from a local directory, frozen.

    ``directory`` is what ``save_pretrained`` (or ``huggingface-cli download --local-dir``)
    writes: ``config.json``, the weights and the tokenizer files. Nothing is downloaded
    (``local_files_only=True``). ``encode`` tokenises with padding and truncation to
    ``max_length`` tokens and returns the last hidden states ``(B, L, hidden_size)`` and the
    tokenizer's attention mask. Encoder-decoder models (T5) use their encoder. Decoder
    tokenizers without a padding token (LLaMA) pad with their end-of-sequence token; the mask
    excludes the padding either way. ``dtype`` (e.g. ``"float16"`` for a 7B model) and
    ``device`` are passed on; outputs are returned as float32 on the CPU.
    """

    def __init__(
        self,
        directory: str | Path,
        max_length: int = 256,
        device: str = "cpu",
        dtype: str | None = None,
    ) -> None:
        super().__init__()
        directory = Path(directory)
        fix = (
            "point the text encoder's path at a folder written by save_pretrained, or "
            "download the model on an online machine (huggingface-cli download NAME "
            "--local-dir DIR) and copy that folder here"
        )
        if not directory.is_dir():
            raise InputError(directory, "text encoder directory not found", fix)
        if not (directory / "config.json").is_file():
            raise InputError(
                directory, "not a Hugging Face model directory (no config.json in it)", fix
            )
        # imported here: transformers is heavy and only this encoder needs it
        from transformers import AutoModel, AutoTokenizer

        kwargs: dict[str, Any] = {"local_files_only": True}
        if dtype is not None:
            kwargs["dtype"] = getattr(torch, dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            model = AutoModel.from_pretrained(str(directory), **kwargs)
        except (OSError, ValueError, KeyError) as error:
            raise InputError(
                directory, f"cannot load a Hugging Face model and tokenizer ({error})", fix
            ) from error
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        if self.tokenizer.pad_token is None:
            # LLaMA-style tokenizers have no pad token; padded positions are masked anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(device)
        self.device = torch.device(device)
        self.directory = directory
        self.max_length = max_length
        self.dim = int(model.config.hidden_size)
        self._freeze()

    def _encode(self, texts: list[str]) -> TextEncoding:
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state  # (B, L, hidden_size)
        mask = batch["attention_mask"].bool()
        return TextEncoding(hidden.float().cpu(), mask.cpu())


TEXT_ENCODERS: dict[str, type[TextEncoder]] = {
    "hashing": HashingTextEncoder,
    "huggingface": HuggingFaceTextEncoder,
}


def get_text_encoder(settings: Mapping[str, Any], where: str = "text_encoder") -> TextEncoder:
    """A text encoder from a config mapping: ``{"kind": "hashing", "dim": 64, ...}`` or
    ``{"kind": "huggingface", "path": DIR, "max_length": 256}``; other keys are the
    encoder's keyword arguments. ``where`` names the config key in errors."""
    settings = dict(settings)
    kind = settings.pop("kind", None)
    if kind not in TEXT_ENCODERS:
        raise ConfigError(
            f"{where}.kind",
            f"unknown text encoder kind {kind!r}",
            f"use one of: {', '.join(sorted(TEXT_ENCODERS))}",
        )
    cls = TEXT_ENCODERS[kind]
    if kind == "huggingface":
        if "path" not in settings:
            raise ConfigError(
                f"{where}.path", "missing", "name the local model directory (save_pretrained)"
            )
        settings["directory"] = settings.pop("path")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        names = sorted(accepted - {"directory"} | ({"path"} if "directory" in accepted else set()))
        raise ConfigError(
            f"{where}.{unknown[0]}",
            f"is not a setting of the {kind} text encoder",
            f"use one of: kind, {', '.join(names)}",
        )
    return cls(**settings)
