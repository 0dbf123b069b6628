# Diffusion: QSIPrep-style preprocessing -> tensor fit -> FA/MD/AD/RD, QC and model-ready
# arrays, one job per subject/session (a nipype workflow inside the job). Outputs form a
# BIDS-derivatives dataset per dataset.


rule dwi:
    input:
        unpack(dwi_inputs),
    output:
        preproc=f"{DWI_DIR}/{{prefix}}_space-dwi_desc-preproc_dwi.nii.gz",
        bval=f"{DWI_DIR}/{{prefix}}_space-dwi_desc-preproc_dwi.bval",
        bvec=f"{DWI_DIR}/{{prefix}}_space-dwi_desc-preproc_dwi.bvec",
        preproc_json=f"{DWI_DIR}/{{prefix}}_space-dwi_desc-preproc_dwi.json",
        b0=f"{DWI_DIR}/{{prefix}}_space-dwi_dwiref.nii.gz",
        mask=f"{DWI_DIR}/{{prefix}}_space-dwi_desc-brain_mask.nii.gz",
        fa=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-fa_dwimap.nii.gz",
        md=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-md_dwimap.nii.gz",
        ad=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-ad_dwimap.nii.gz",
        rd=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-rd_dwimap.nii.gz",
        rgb=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-rgb_dwimap.nii.gz",
        fa_json=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-fa_dwimap.json",
        md_json=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-md_dwimap.json",
        ad_json=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-ad_dwimap.json",
        rd_json=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-rd_dwimap.json",
        rgb_json=f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-rgb_dwimap.json",
        confounds=f"{DWI_DIR}/{{prefix}}_desc-confounds_timeseries.tsv",
        confounds_json=f"{DWI_DIR}/{{prefix}}_desc-confounds_timeseries.json",
        imageqc=f"{DWI_DIR}/{{prefix}}_desc-imageqc_dwi.tsv",
        tensor_figure=f"{DWI_ROOT}/{{folder}}/figures/{{prefix}}_desc-tensor_dwimap.png",
        motion_figure=f"{DWI_ROOT}/{{folder}}/figures/{{prefix}}_desc-motion_dwi.png",
        model_npy=DWI_TENSOR,
        model_nii=f"{DWI_ROOT}/{{folder}}/tensors/{{prefix}}_space-box_desc-famd_tensor.nii.gz",
        model_json=f"{DWI_ROOT}/{{folder}}/tensors/{{prefix}}_space-box_desc-famd_tensor.json",
    log:
        "logs/dwi/{dataset}/{folder}/{prefix}.log",
    wildcard_constraints:
        dataset=one_of(DWI_DATASETS),
    conda:
        "../../envs/dwi.yaml"
    threads: 1
    params:
        sidecars=dwi_sidecars,
        settings=config["dwi"],
    script:
        "../../scripts/dwi.py"
