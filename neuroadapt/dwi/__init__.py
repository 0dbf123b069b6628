"""Diffusion MRI preprocessing and tensor fitting, in QSIPrep's documented order.

load and check (:mod:`.gradients`) -> reorient to RAS with the b-vectors rotated ->
denoise (:mod:`.denoise`: MP-PCA, patch2self or none) -> Gibbs unringing (optional) ->
head-motion correction with b-vector rotation (:mod:`.motion`) -> b0 reference and brain
mask (:mod:`.mask`) -> tensor fit on the b <= 1200 shell (:mod:`.tensor`) -> confounds, image
QC and figures (:mod:`.qc`) -> model-ready FA/MD arrays (:mod:`.model_ready`).
:mod:`.workflow` composes the steps as a nipype workflow; :mod:`.pipeline` runs it for one
subject and writes the BIDS-derivatives outputs.
"""
