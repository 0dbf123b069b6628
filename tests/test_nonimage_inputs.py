"""Report text, clinical and genetic tables as tensors for the multimodal methods."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neuroadapt.errors import InputError
from neuroadapt.nonimage_inputs import non_image_tensors

INPUTS = ["fa", "md", "report_text", "clinical", "genetics"]


@pytest.fixture
def rows(tmp_path) -> pd.DataFrame:
    ids = [f"sub-{i}" for i in range(1, 6)]
    pd.DataFrame(
        {"participant_id": ids, "report": ["inattentive boy", "calm girl", "", "x", "y z"]}
    ).to_csv(tmp_path / "reports.tsv", sep="\t", index=False)
    pd.DataFrame(
        {"participant_id": ids[:4], "score": [1.0, 3.0, 5.0, 100.0], "iq": [90, 110, 100, None]}
    ).to_csv(tmp_path / "clinical.tsv", sep="\t", index=False)
    pd.DataFrame({"participant_id": ids, "snp01": [0, 1, 2, 1, 0]}).to_csv(
        tmp_path / "genotype.tsv", sep="\t", index=False
    )
    return pd.DataFrame(
        {
            "participant_id": ids,
            "report": str(tmp_path / "reports.tsv"),
            "clinical": str(tmp_path / "clinical.tsv"),
            "genetics": str(tmp_path / "genotype.tsv"),
        }
    )


def test_tables_are_standardised_on_the_training_part_only(rows):
    train = np.array([0, 1, 2])
    out = non_image_tensors(rows, INPUTS, train, {"kind": "hashing", "dim": 8}, "s.tsv", "e")
    # score: training mean 3, sd sqrt(8/3); sub-4's 100 does not move the statistics
    sd = np.sqrt(8 / 3)
    np.testing.assert_allclose(out["clinical"][:3, 0], [-2 / sd, 0, 2 / sd], rtol=1e-6)
    assert out["clinical"][3, 0] == 0.0  # sub-4 lacks iq: absent, zeros
    assert out["clinical_present"].tolist() == [True, True, True, False, False]  # sub-5: no row
    assert out["genetics"].shape == (5, 1) and out["genetics_present"].all()


def test_reports_become_frozen_token_embeddings_with_masks(rows):
    out = non_image_tensors(rows, INPUTS, np.arange(3), {"kind": "hashing", "dim": 8}, "s", "e")
    assert out["report_text"].shape[::2] == (5, 8) and out["report_text"].dtype == torch.float32
    assert out["report_text_present"].tolist() == [True, True, False, True, True]
    assert out["report_text_mask"].sum(dim=1).tolist() == [2, 2, 0, 1, 2]
    again = non_image_tensors(rows, INPUTS, np.arange(3), {"kind": "hashing", "dim": 8}, "s", "e")
    assert torch.equal(out["report_text"], again["report_text"])  # deterministic
    assert set(non_image_tensors(rows, ["fa"], np.arange(3), None, "s", "e")) == set()


def test_a_missing_phenotype_table_names_the_column_and_fix(rows):
    with pytest.raises(InputError, match="input 'genetics' needs one phenotype table in column"):
        non_image_tensors(rows.drop(columns="genetics"), INPUTS, np.arange(3), None, "s.tsv", "e")
