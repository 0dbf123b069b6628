# Diffusion: QSIPrep-style preprocessing -> tensor fit -> FA/MD/AD/RD, QC and model-ready
# arrays, one job per subject/session (a nipype workflow inside the job). Outputs form a
# BIDS-derivatives dataset per dataset.

# FA registered to a template (dwi.template): these outputs exist only when it is on.
DWI_TEMPLATE = config["dwi"]["template"]
DWI_MAPS_TEMPLATE = f"{DWI_DIR}/{{prefix}}_space-{DWI_TEMPLATE['space']}"
DWI_XFM = f"{DWI_DIR}/{{prefix}}_from-dwi_to-{DWI_TEMPLATE['space']}_mode-image"
DWI_TEMPLATE_OUTPUTS = (
    {
        "template_fa": f"{DWI_MAPS_TEMPLATE}_model-tensor_param-fa_dwimap.nii.gz",
        "template_md": f"{DWI_MAPS_TEMPLATE}_model-tensor_param-md_dwimap.nii.gz",
        "template_fa_json": f"{DWI_MAPS_TEMPLATE}_model-tensor_param-fa_dwimap.json",
        "template_md_json": f"{DWI_MAPS_TEMPLATE}_model-tensor_param-md_dwimap.json",
        "template_mask": f"{DWI_MAPS_TEMPLATE}_desc-brain_mask.nii.gz",
        "template_xfm": f"{DWI_XFM}_xfm.txt",
        "template_xfm_json": f"{DWI_XFM}_xfm.json",
        "template_figure": f"{DWI_ROOT}/{{folder}}/figures/{{prefix}}_space-"
        f"{DWI_TEMPLATE['space']}_desc-registration_dwimap.png",
    }
    if DWI_TEMPLATE["enabled"]
    else {}
)
if DWI_TEMPLATE["enabled"] and DWI_TEMPLATE["transform"] == "syn":
    DWI_TEMPLATE_OUTPUTS["template_warp"] = f"{DWI_XFM}_desc-syn_xfm.nii.gz"
    DWI_TEMPLATE_OUTPUTS["template_warp_json"] = f"{DWI_XFM}_desc-syn_xfm.json"


rule dwi:
    input:
        unpack(dwi_inputs),
    output:
        **DWI_TEMPLATE_OUTPUTS,
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
    benchmark:
        "logs/benchmarks/dwi/{dataset}/{folder}/{prefix}.tsv"
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
