"""CT/PET preprocessing: SUV conversion, PET-to-CT rigid registration, resampling to a
common cropped grid and model-ready tensors (issue 4).

Modules, one concept each: :mod:`images` (NIfTI <-> SimpleITK in world coordinates, input
checks), :mod:`suv` (body-weight SUV from the PET sidecar), :mod:`registration` (mutual
information rigid/affine registration), :mod:`resample` (grids, crop box, resampling,
normalisation), :mod:`outputs` (dataset-level derivatives files) and
:mod:`pipeline` (one subject, end to end, as the Snakemake rules call it).

World coordinates are RAS+ mm throughout the public API (as nibabel's affines);
SimpleITK's LPS+ convention stays inside :mod:`images` and :mod:`registration`.
"""
