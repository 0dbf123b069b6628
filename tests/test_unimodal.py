"""Paper 4's phase-1 models (neuroadapt/methods/unimodal.py)."""

from __future__ import annotations

import pytest
import torch

from neuroadapt.methods import get_method
from neuroadapt.models import TabularTokenEncoder

torch.manual_seed(0)


def encoders():
    return {
        "clinical": TabularTokenEncoder(3, 16, layers=1, heads=2),
        "genetics": TabularTokenEncoder(5, 16, layers=1, heads=2),
    }


def test_a_unimodal_model_trains_its_whole_encoder_on_its_modality_only():
    given = encoders()
    method = get_method("unimodal_clinical")(given, head_hidden=None, lr_encoder=1e-3)
    assert all(p.requires_grad for p in given["clinical"].parameters())
    # the other modalities' encoders are not part of the model
    assert all(
        p is not q for p in method.model.parameters() for q in given["genetics"].parameters()
    )
    groups = {g["name"]: g for g in method.param_groups()}
    assert groups["encoder"]["lr"] == 1e-3 and groups["head"]["lr"] == 1e-3
    encoder_count = sum(p.numel() for p in given["clinical"].parameters())
    assert sum(p.numel() for p in groups["encoder"]["params"]) == encoder_count
    assert method.parameter_report().trainable == encoder_count + 16 + 1  # linear head


def test_absent_samples_get_logit_zero_and_no_loss():
    method = get_method("unimodal_clinical")(encoders(), head_hidden=None)
    inputs = {
        "clinical": torch.randn(4, 3),
        "clinical_present": torch.tensor([True, False, True, False]),
        "genetics": torch.randn(4, 5),
    }
    out = method.model(inputs)
    assert torch.equal(out["logits"][[1, 3]], torch.zeros(2, 1))
    assert not torch.equal(out["logits"][[0, 2]], torch.zeros(2, 1))
    label = torch.tensor([1.0, 0.0, 0.0, 1.0])
    loss = method.loss(out, {"label": label})
    # the loss of the present samples only: the absent ones' labels do not matter
    flipped = method.loss(out, {"label": torch.tensor([1.0, 1.0, 0.0, 0.0])})
    assert torch.isclose(loss, flipped)
    loss.backward()  # the encoder learns from the present samples
    assert next(iter(method.model.encoder.parameters())).grad is not None
    nobody = inputs | {"clinical_present": torch.zeros(4, dtype=torch.bool)}
    assert method.loss(method.model(nobody), {"label": label}).item() == 0.0


def test_a_unimodal_model_without_its_input_says_what_to_add():
    with pytest.raises(ValueError, match="unimodal_report_text needs the 'report_text' input"):
        get_method("unimodal_report_text")(encoders())
