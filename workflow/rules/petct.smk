# CT/PET: SUV -> PET-to-CT rigid registration -> resampling -> crop -> tensors, one job per
# subject/session. Outputs form a BIDS-derivatives dataset per dataset.


rule petct:
    input:
        unpack(petct_inputs),
    output:
        suv=f"{PETCT_ROOT}/{{folder}}/pet/{{prefix}}_desc-suv_pet.nii.gz",
        suv_json=f"{PETCT_ROOT}/{{folder}}/pet/{{prefix}}_desc-suv_pet.json",
        xfm=f"{PETCT_ROOT}/{{folder}}/xfm/{{prefix}}_from-pet_to-ct_mode-image_xfm.txt",
        xfm_json=f"{PETCT_ROOT}/{{folder}}/xfm/{{prefix}}_from-pet_to-ct_mode-image_xfm.json",
        pet_ct=f"{PETCT_ROOT}/{{folder}}/pet/{{prefix}}_space-ct_desc-suv_pet.nii.gz",
        pet_ct_json=f"{PETCT_ROOT}/{{folder}}/pet/{{prefix}}_space-ct_desc-suv_pet.json",
        ct_box=f"{PETCT_ROOT}/{{folder}}/ct/{{prefix}}_space-box_ct.nii.gz",
        pet_box=f"{PETCT_ROOT}/{{folder}}/pet/{{prefix}}_space-box_desc-suv_pet.nii.gz",
        gtv_box=f"{PETCT_ROOT}/{{folder}}/ct/{{prefix}}_space-box_label-GTV_mask.nii.gz",
        box_json=f"{PETCT_ROOT}/{{folder}}/tensors/{{prefix}}_space-box_desc-ctpet_tensor.json",
        tensor=f"{PETCT_ROOT}/{{folder}}/tensors/{{prefix}}_space-box_desc-ctpet_tensor.npy",
        tensor_nii=f"{PETCT_ROOT}/{{folder}}/tensors/{{prefix}}_space-box_desc-ctpet_tensor.nii.gz",
        mask=f"{PETCT_ROOT}/{{folder}}/tensors/{{prefix}}_space-box_label-GTV_mask.npy",
        qc_figure=f"{PETCT_ROOT}/{{folder}}/figures/{{prefix}}_desc-registration_petct.png",
    log:
        "logs/petct/{dataset}/{folder}/{prefix}.log",
    benchmark:
        "logs/benchmarks/petct/{dataset}/{folder}/{prefix}.tsv"
    wildcard_constraints:
        dataset=one_of(PETCT_DATASETS),
    conda:
        "../../envs/petct.yaml"
    threads: 1
    params:
        pet_sidecars=pet_sidecars,
        settings=config["petct"],
    script:
        "../../scripts/petct.py"
