"""Diffusion MRI preprocessing and tensor fitting, in QSIPrep's documented order.

load and check (:mod:`.gradients`) -> reorient to RAS with the b-vectors rotated ->
denoise (:mod:`.denoise`: MP-PCA, patch2self or none) -> Gibbs unringing (optional) ->
B1 bias-field correction (:mod:`.bias`) -> head-motion correction with b-vector rotation
(:mod:`.motion`) -> b0 reference and brain mask (:mod:`.mask`) -> tensor fit on the
b <= 1200 shell (:mod:`.tensor`) -> confounds, image QC and figures (:mod:`.qc`) ->
model-ready FA/MD arrays (:mod:`.model_ready`); optionally FA registered to the MNI152
template nilearn ships, with template-space FA/MD (:mod:`.template`). Each switchable
step has a dipy backend and an MRtrix3 one (:mod:`.mrtrix`) where MRtrix3 has the step.
:mod:`.workflow` composes the steps as a nipype workflow; :mod:`.pipeline` runs it for one
subject (or, for a series QSIPrep already preprocessed, only the mask and tensor steps) and
writes the BIDS-derivatives outputs.
"""
