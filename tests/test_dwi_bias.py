"""B1 bias-field correction (N4 on the mean b0): a field planted on a demo subject is found,
and correcting it leaves the tensor maps as they were (a multiplicative field cancels in the
fit)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from test_dwi_demo import series_paths, truth_map

from neuroadapt.demo import brain
from neuroadapt.dwi import bias, gradients, mask
from neuroadapt.dwi.settings import MaskSettings


def planted_field(shape) -> np.ndarray:
    """A smooth field varying by a factor 1.8 across the head (3T-like B1 inhomogeneity)."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return np.exp(0.3 * x - 0.15 * y + 0.1 * z * x).astype(np.float32)


def test_n4_finds_a_planted_field_and_flattens_white_matter(dwi_cohort):
    bids, truth = dwi_cohort
    series = gradients.to_ras(gradients.load_dwi(*series_paths(bids)))
    field = planted_field(series.data.shape[:3])
    b0 = mask.b0_reference(series.data * field[..., None], series.b0_mask())
    head = mask.head_mask(b0, MaskSettings())
    estimated = bias.n4_field(b0, head, nib.affines.voxel_sizes(series.affine))
    brain_mask = mask.brain_mask(b0, MaskSettings())
    r = np.corrcoef(np.log(estimated[brain_mask]), np.log(field[brain_mask]))[0, 1]
    white = (truth_map(truth, "dseg") == brain.WHITE_MATTER) & brain_mask

    def spread(image):  # coefficient of variation in white matter
        return image[white].std() / image[white].mean()

    corrected = b0 / estimated
    print(f"field r {r:.3f}; white-matter CoV {spread(b0):.3f} -> {spread(corrected):.3f}")
    assert r > 0.9
    assert spread(corrected) < 0.6 * spread(b0)
    assert np.allclose(bias.correct(b0[..., None], estimated)[..., 0], corrected, rtol=1e-5)
