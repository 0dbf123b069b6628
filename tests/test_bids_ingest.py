"""Ingestion: the subject table on good datasets, clear errors on malformed ones."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_DWI, make_cohort

from neuroadapt.bids import SIDECAR_SEPARATOR, ingest, merge_sidecars, write_outputs
from neuroadapt.errors import InputError
from neuroadapt.subjects import read_subjects_table

DWI_NEEDS = ["dwi", "t1w", "report", "clinical", "genetics"]


def run(bids: Path, **kwargs):
    options = {"required": ["dwi"], "label": "diagnosis", "covariates": ["age", "sex", "site"]}
    return ingest(bids, **(options | kwargs))


def test_demo_cohort_gives_one_row_per_subject_with_every_path(dwi_cohort, tmp_path):
    bids, _ = dwi_cohort
    result = run(bids, required=DWI_NEEDS)
    table = result.table
    assert list(table.participant_id) == ["sub-001", "sub-002", "sub-003", "sub-004"]
    assert table.session_id.isna().all()
    assert list(table.columns[:6]) == [
        "participant_id",
        "session_id",
        "diagnosis",
        "age",
        "sex",
        "site",
    ]
    for column in ("dwi", "dwi_bval", "dwi_bvec", "dwi_sidecars", "t1w", "report", "genetics"):
        assert all(Path(p).is_file() for p in table[column]), column
    assert table.dwi[0] == str(bids / "sub-001" / "dwi" / "sub-001_dwi.nii.gz")
    assert result.report["label_counts"] == {"ADHD": 2, "TD": 2}
    assert result.report["dropped"] == []

    write_outputs(result, tmp_path / "subjects.tsv", tmp_path / "validation.json")
    again = read_subjects_table(tmp_path / "subjects.tsv")
    pd.testing.assert_frame_equal(
        again, table.astype(str).where(table.notna(), np.nan), check_dtype=False
    )
    assert json.loads((tmp_path / "validation.json").read_text())["rows_kept"] == 4


def test_paths_stay_relative_when_bids_dir_is_relative(tiny_dwi, monkeypatch):
    monkeypatch.chdir(tiny_dwi.parent)
    table = run(Path(tiny_dwi.name)).table
    assert table.dwi[0] == f"{tiny_dwi.name}/sub-001/dwi/sub-001_dwi.nii.gz"


def test_sessions_give_one_row_each(tmp_path):
    bids, _ = make_cohort(tmp_path, TINY_DWI | {"n_sessions": 2})
    table = run(bids).table
    assert len(table) == 8
    assert list(table.session_id[:2]) == ["ses-01", "ses-02"]
    assert "ses-02" in table.dwi[1]


def test_include_and_exclude_filters(tiny_dwi):
    table = run(tiny_dwi, include=["sub-001", "sub-002", "sub-003"], exclude=["sub-003"]).table
    assert list(table.participant_id) == ["sub-001", "sub-002"]
    with pytest.raises(InputError, match="does not list sub-099 named in 'include'"):
        run(tiny_dwi, include=["sub-099"])
    with pytest.raises(InputError, match="no participant is left"):
        run(tiny_dwi, include=["sub-001"], exclude=["sub-001"])


def test_sidecars_and_gradients_inherited_from_the_root(tiny_copy):
    """Shared .bval/.bvec/.json at the dataset root apply to every subject (BIDS
    inheritance); a subject's own sidecar overrides single fields."""
    first = tiny_copy / "sub-001" / "dwi" / "sub-001_dwi"
    shared = json.loads(Path(f"{first}.json").read_text())
    (tiny_copy / "dwi.json").write_text(json.dumps(shared))
    for extension in (".bval", ".bvec"):
        shutil.copy(f"{first}{extension}", tiny_copy / f"dwi{extension}")
    for sub in ("sub-002", "sub-003", "sub-004"):
        for extension in (".bval", ".bvec", ".json"):
            (tiny_copy / sub / "dwi" / f"{sub}_dwi{extension}").unlink()
    Path(f"{first}.json").write_text(json.dumps({"EchoTime": 0.1}))

    table = run(tiny_copy).table
    row2 = table.set_index("participant_id").loc["sub-002"]
    assert row2.dwi_bval == str(tiny_copy / "dwi.bval")
    assert row2.dwi_sidecars == str(tiny_copy / "dwi.json")
    row1 = table.set_index("participant_id").loc["sub-001"]
    sidecars = row1.dwi_sidecars.split(SIDECAR_SEPARATOR)
    assert sidecars == [str(tiny_copy / "dwi.json"), f"{first}.json"]
    merged = merge_sidecars(sidecars)
    assert merged["EchoTime"] == 0.1
    assert merged["PhaseEncodingDirection"] == shared["PhaseEncodingDirection"]


# ----------------------------------------------------------------- malformed datasets


def _dwi(bids: Path, sub: str = "sub-002", extension: str = ".nii.gz") -> Path:
    return bids / sub / "dwi" / f"{sub}_dwi{extension}"


def test_missing_bvec(tiny_copy):
    _dwi(tiny_copy, extension=".bvec").unlink()
    with pytest.raises(
        InputError, match=r"sub-002_dwi.nii.gz: has no .bvec file.*Fix: add sub-002_dwi.bvec"
    ):
        run(tiny_copy)


def test_bval_bvec_count_mismatch(tiny_copy):
    bval = _dwi(tiny_copy, extension=".bval")
    bval.write_text(" ".join(bval.read_text().split()[:-1]) + "\n")
    with pytest.raises(
        InputError,
        match=r"has 9 volumes but sub-002_dwi.bval lists 8 b-values and "
        r"sub-002_dwi.bvec 9 b-vectors",
    ):
        run(tiny_copy)


def test_bvec_with_wrong_number_of_rows(tiny_copy):
    bvec = _dwi(tiny_copy, extension=".bvec")
    bvec.write_text("\n".join(bvec.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(InputError, match=r"sub-002_dwi.bvec: has shape \(2, 9\), expected 3 rows"):
        run(tiny_copy)


def test_three_dimensional_dwi(tiny_copy):
    image = nib.load(_dwi(tiny_copy))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[..., 0], image.affine), _dwi(tiny_copy))
    with pytest.raises(
        InputError, match=r"sub-002_dwi.nii.gz: is 3D .*expected a 4D image.*DWI must be a 4D"
    ):
        run(tiny_copy)


def test_truncated_gzip(tiny_copy):
    path = _dwi(tiny_copy)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(InputError, match=r"sub-002_dwi.nii.gz: is truncated or corrupt"):
        run(tiny_copy)


def test_file_that_is_not_nifti(tiny_copy):
    with gzip.open(_dwi(tiny_copy), "wb") as stream:
        stream.write(b"this is not an image")
    with pytest.raises(InputError, match=r"sub-002_dwi.nii.gz: cannot be read as NIfTI"):
        run(tiny_copy)


def test_nan_voxels(tiny_copy):
    path = _dwi(tiny_copy)
    image = nib.load(path)
    data = np.asarray(image.dataobj).astype(np.float32)
    data[1, 2, 3, 0] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), path)
    with pytest.raises(InputError, match=r"sub-002_dwi.nii.gz: has 1 NaN/inf voxel values"):
        run(tiny_copy)
    # A user who knows the data is fine can skip the full read.
    assert len(run(tiny_copy, check_image_data=False).table) == 4


def test_missing_participants_tsv(tiny_copy, caplog):
    (tiny_copy / "participants.tsv").unlink()
    with pytest.raises(
        InputError,
        match=r"participants.tsv: is missing; diagnosis, age, sex, site come\(s\) from it.*"
        r"Fix: add participants.tsv",
    ):
        run(tiny_copy)
    # BIDS only recommends the file: without a label or covariate the folders are the subjects
    with caplog.at_level("WARNING"):
        table = run(tiny_copy, label=None, covariates=[]).table
    assert list(table.participant_id) == ["sub-001", "sub-002", "sub-003", "sub-004"]
    assert "participants are the 4 subject folders" in caplog.text


def test_missing_label_column(tiny_copy):
    path = tiny_copy / "participants.tsv"
    table = pd.read_csv(path, sep="\t").drop(columns="diagnosis")
    table.to_csv(path, sep="\t", index=False)
    with pytest.raises(
        InputError, match=r"has no column 'diagnosis'.*available: participant_id, site"
    ):
        run(tiny_copy)


def test_one_class_only(tiny_dwi):
    with pytest.raises(
        InputError, match=r"column 'diagnosis' has fewer than two classes.*only 'TD'"
    ):
        run(tiny_dwi, include=["sub-001", "sub-003"])


def test_duplicate_subject_in_participants(tiny_copy):
    path = tiny_copy / "participants.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(
        InputError, match=r"participants.tsv: lists subjects more than once: sub-001"
    ):
        run(tiny_copy)


def test_subject_folders_differing_only_in_case(tiny_copy):
    shutil.copytree(tiny_copy / "sub-001", tiny_copy / "sub-ABC")
    shutil.copytree(tiny_copy / "sub-001", tiny_copy / "sub-abc")
    with pytest.raises(InputError, match=r"sub-abc: duplicates subject sub-ABC"):
        run(tiny_copy)


def test_subject_folder_not_in_participants(tiny_copy):
    shutil.copytree(tiny_copy / "sub-001", tiny_copy / "sub-777")
    with pytest.raises(InputError, match=r"does not list subject folder\(s\) sub-777"):
        run(tiny_copy)


def test_subject_without_dwi_is_dropped_or_fails(tiny_copy, caplog):
    shutil.rmtree(tiny_copy / "sub-002" / "dwi")
    with caplog.at_level(logging.WARNING):
        result = run(tiny_copy, on_missing_modality="drop")
    assert list(result.table.participant_id) == ["sub-001", "sub-003", "sub-004"]
    assert result.report["dropped"] == [{"id": "sub-002", "missing": ["dwi"]}]
    assert "dropping sub-002: no dwi" in caplog.text
    with pytest.raises(
        InputError,
        match=r"1 subject/session\(s\) lack data.*"
        r"on_missing_modality: drop\n  sub-002: no dwi$",
    ):
        run(tiny_copy, on_missing_modality="fail")


def test_missing_label_value_is_treated_like_missing_data(tiny_copy):
    path = tiny_copy / "participants.tsv"
    table = pd.read_csv(path, sep="\t")
    table.loc[0, "diagnosis"] = "n/a"
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    result = run(tiny_copy)
    assert result.report["dropped"] == [{"id": "sub-001", "missing": ["label 'diagnosis'"]}]


def test_malformed_sidecar_json(tiny_copy):
    _dwi(tiny_copy, extension=".json").write_text("{ not json")
    with pytest.raises(InputError, match=r"sub-002_dwi.json: is not valid JSON"):
        run(tiny_copy)


def test_two_dwi_series_in_one_session_must_be_disambiguated(tiny_copy):
    folder = tiny_copy / "sub-002" / "dwi"
    for path in list(folder.glob("sub-002_dwi.*")):
        shutil.copy(path, folder / path.name.replace("_dwi", "_acq-hires_dwi"))
    with pytest.raises(InputError, match=r"sub-002: 2 dwi images .*entities: \{acq"):
        run(tiny_copy)
    chosen = run(tiny_copy, modality_overrides={"dwi": {"entities": {"acq": "hires"}}}, label=None)
    assert list(chosen.table.participant_id) == ["sub-002"]
    assert chosen.table.dwi[0].endswith("sub-002_acq-hires_dwi.nii.gz")
    assert chosen.table.dwi_bval[0].endswith("sub-002_acq-hires_dwi.bval")


def test_every_problem_is_reported_in_one_run(tiny_copy):
    _dwi(tiny_copy, "sub-001", ".bvec").unlink()
    _dwi(tiny_copy, "sub-003", ".json").write_text("[")
    with pytest.raises(InputError) as error:
        run(tiny_copy)
    message = str(error.value)
    assert "2 file problem(s)" in message
    assert "sub-001_dwi.nii.gz: has no .bvec" in message and "sub-003_dwi.json" in message


def test_not_a_bids_root(tmp_path):
    with pytest.raises(InputError, match=r"does not exist"):
        run(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"dataset_description.json: is missing"):
        run(tmp_path)
    (tmp_path / "dataset_description.json").write_text('{"Name": "x"}')
    with pytest.raises(InputError, match=r"has no 'BIDSVersion' field"):
        run(tmp_path)


def test_petct_cohort_finds_ct_pet_and_the_gtv_derivative(petct_cohort):
    bids, _ = petct_cohort
    result = ingest(
        bids,
        required=["ct", "pet", "gtv"],
        label="event",
        required_columns=["survival_months"],
        covariates=["age", "site"],
    )
    table = result.table
    assert len(table) == 4
    assert table.ct[0] == str(bids / "sub-001" / "ct" / "sub-001_ct.nii.gz")
    assert table.pet[0] == str(bids / "sub-001" / "pet" / "sub-001_trc-FDG_pet.nii.gz")
    assert table.gtv[0] == str(
        bids / "derivatives/gtv/sub-001/ct/sub-001_space-CT_label-GTV_mask.nii.gz"
    )
    assert merge_sidecars(table.pet_sidecars[0].split(SIDECAR_SEPARATOR))["Units"] == "Bq/mL"
    assert result.report["modalities_found"] == {"ct": 4, "pet": 4, "gtv": 4}


def test_pet_without_its_required_sidecar(petct_cohort, tmp_path):
    bids = tmp_path / "petct"
    shutil.copytree(petct_cohort[0], bids)
    (bids / "sub-003/pet/sub-003_trc-FDG_pet.json").unlink()
    with pytest.raises(
        InputError, match=r"sub-003_trc-FDG_pet.nii.gz: has no JSON sidecar \(BIDS requires"
    ):
        ingest(bids, required=["ct", "pet"], label="event")


def test_ct_convention_is_configurable(petct_cohort, tmp_path):
    """CT stored as anat/*_CT.nii.gz (another common convention) is found when configured."""
    bids = tmp_path / "petct"
    shutil.copytree(petct_cohort[0], bids)
    for sub in ("sub-001", "sub-002", "sub-003", "sub-004"):
        (bids / sub / "anat").mkdir()
        for ext in (".nii.gz", ".json"):
            (bids / sub / "ct" / f"{sub}_ct{ext}").rename(bids / sub / "anat" / f"{sub}_CT{ext}")
    assert "ct" not in ingest(bids, required=[], label="event").table.columns
    table = ingest(
        bids,
        required=["ct"],
        label="event",
        modality_overrides={"ct": {"datatype": "anat", "suffix": "CT"}},
    ).table
    assert table.ct[0].endswith("sub-001/anat/sub-001_CT.nii.gz")


def test_row_names_for_per_subject_jobs(tiny_dwi, tmp_path):
    from neuroadapt.subjects import find_row, row_folder, row_prefix

    assert row_prefix("sub-01", None) == "sub-01" and row_folder("sub-01", None) == "sub-01"
    assert row_prefix("sub-01", "ses-2") == "sub-01_ses-2"
    assert row_folder("sub-01", "ses-2") == "sub-01/ses-2"
    result = run(tiny_dwi)
    write_outputs(result, tmp_path / "subjects.tsv", tmp_path / "validation.json")
    table = read_subjects_table(tmp_path / "subjects.tsv")
    assert find_row(table, "sub-003").dwi.endswith("sub-003_dwi.nii.gz")
    with pytest.raises(InputError, match="sub-009 is not in the subjects table"):
        find_row(table, "sub-009")
    # the workflow's cached lookups: read once per version of the file
    from neuroadapt.subjects import cached_row, cached_subjects_table

    path = tmp_path / "subjects.tsv"
    assert cached_row(path, "sub-003").dwi == find_row(table, "sub-003").dwi
    assert cached_subjects_table(path) is cached_subjects_table(path)
    with pytest.raises(InputError, match=r"subjects.tsv: sub-009 is not in the subjects table"):
        cached_row(path, "sub-009")
    kept = table[table.participant_id != "sub-003"]
    kept.to_csv(path, sep="\t", index=False, na_rep="n/a")  # a new version: read again
    with pytest.raises(InputError, match="sub-003 is not in the subjects table"):
        cached_row(path, "sub-003")


def test_a_participant_without_a_phenotype_row_is_kept_with_that_modality_missing(
    dwi_cohort, tmp_path
):
    """Missing rows in phenotype tables are missing modalities of those subjects (the
    multimodal methods' per-sample path), not a reason to drop them."""
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(dwi_cohort[0], bids)
    clinical = pd.read_csv(bids / "phenotype" / "clinical.tsv", sep="\t")
    gone = clinical.participant_id.iloc[0]
    clinical.iloc[1:].to_csv(bids / "phenotype" / "clinical.tsv", sep="\t", index=False)
    result = run(bids, required=DWI_NEEDS)
    assert result.report["dropped"] == []
    assert gone in set(result.table.participant_id)
    assert result.table.clinical.notna().all()


def test_a_longer_b_vector_is_refused_with_its_length(tiny_copy):
    bvec = _dwi(tiny_copy, extension=".bvec")
    vectors = np.loadtxt(bvec)
    vectors[:, 3] *= 1.5  # a b-value scaling folded into the vector
    np.savetxt(bvec, vectors)
    with pytest.raises(
        InputError,
        match=r"sub-002_dwi.bvec: has b-vectors that are not unit length for diffusion-weighted volumes "
        r"3 \(1.500\).*Fix: normalise each b-vector",
    ):
        run(tiny_copy)


def test_b_vectors_rounded_by_a_converter_pass(tiny_copy):
    bvec = _dwi(tiny_copy, extension=".bvec")
    np.savetxt(bvec, np.round(np.loadtxt(bvec), 3), fmt="%.3f")
    assert len(run(tiny_copy).table) == 4


def test_an_empty_participants_tsv_is_named(tiny_copy):
    (tiny_copy / "participants.tsv").write_text("")
    with pytest.raises(InputError, match=r"participants.tsv: is empty.*Fix: write a header line"):
        run(tiny_copy)


def test_a_participants_table_saved_with_commas_is_named(tiny_copy):
    path = tiny_copy / "participants.tsv"
    pd.read_csv(path, sep="\t").to_csv(path, index=False)
    with pytest.raises(
        InputError,
        match=r"participants.tsv: has one column named 'participant_id,.*saved comma- or "
        r"semicolon-separated.*Fix: save it with tabs",
    ):
        run(tiny_copy)


def test_bids_dir_at_a_subject_folder_names_the_dataset_root(tiny_copy):
    with pytest.raises(
        InputError,
        match=rf"sub-001: is a folder inside the BIDS dataset {tiny_copy}, not its root.*"
        rf"Fix: set datasets.<name>.bids_dir to {tiny_copy}",
    ):
        run(tiny_copy / "sub-001")


def test_the_meg_empty_room_pseudo_subject_is_not_a_row(tiny_copy):
    (tiny_copy / "sub-emptyroom" / "meg").mkdir(parents=True)
    path = tiny_copy / "participants.tsv"
    table = pd.read_csv(path, sep="\t")
    extra = table.iloc[[0]].assign(participant_id="sub-emptyroom")
    pd.concat([table, extra]).to_csv(path, sep="\t", index=False)
    rows = run(tiny_copy).table
    assert "sub-emptyroom" not in set(rows.participant_id) and len(rows) == 4


def test_a_problem_in_a_modality_no_experiment_uses_does_not_block(tiny_copy, caplog):
    anat = tiny_copy / "sub-002" / "anat"
    for old in anat.glob("*T1w*"):
        old.unlink()
    for run_label in ("1", "2"):  # two T1w runs: ambiguous, but only dwi is needed
        image = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
        nib.save(image, anat / f"sub-002_run-{run_label}_T1w.nii.gz")
    with caplog.at_level("WARNING"):
        result = run(tiny_copy)
    assert len(result.table) == 4
    t1w = result.table.set_index("participant_id").t1w
    assert t1w.isna().tolist() == [False, True, False, False]  # sub-002's left empty
    assert "ignored (no experiment uses this modality): sub-002: 2 t1w images" in caplog.text
    assert result.report["ignored_problems"][0].startswith("sub-002: 2 t1w images")
    with pytest.raises(InputError, match=r"sub-002: 2 t1w images"):
        run(tiny_copy, required=["dwi", "t1w"], on_missing_modality="drop")


def test_a_symbolic_link_loop_is_named_not_counted(tiny_copy):
    """A link to its own folder made pybids find one image 41 times ('41 dwi images
    (sub-001_dwi.nii.gz, sub-001_dwi.nii.gz, ...)')."""
    link = tiny_copy / "sub-001" / "dwi" / "again"
    link.symlink_to("..", target_is_directory=True)
    with pytest.raises(
        InputError,
        match=r"sub-001/dwi/again: is a symbolic link to \.\., a folder that contains the link "
        r"itself.*Fix: remove the link",
    ):
        ingest(tiny_copy, required=["dwi"], label="diagnosis")
    link.unlink()
    (tiny_copy / "sub-001" / "dwi" / "elsewhere").symlink_to(
        tiny_copy.parent, target_is_directory=True
    )
    with pytest.raises(InputError, match=r"elsewhere: is a symbolic link to"):
        ingest(tiny_copy, required=["dwi"], label="diagnosis")
