"""SUV_bw from a PET sidecar: a case worked out by hand, units, fallbacks, bad fields."""

from __future__ import annotations

import math

import pytest

from neuroadapt.errors import InputError
from neuroadapt.petct.suv import radionuclide_key, suv_factors

SIDECAR = {
    "Units": "kBq/mL",
    "InjectedRadioactivity": 370.0,
    "InjectedRadioactivityUnits": "MBq",
    "BodyWeight": 74.0,
    "BodyWeightUnits": "kg",
    "TracerRadionuclide": "F18",
    "InjectionStart": 0,
    "ScanStart": 6586.2,  # exactly one F-18 half-life
    "ImageDecayCorrected": True,
    "ImageDecayCorrectionTime": 6586.2,
}


def test_hand_computed_case():
    # 370 MBq decays to 185 MBq after one half-life; 185e6 Bq / 74000 g = 2500 Bq/g.
    # A voxel of 5 kBq/mL = 5000 Bq/mL is SUV 5000 / 2500 = 2.0.
    factors = suv_factors(SIDECAR)
    assert factors.decay_factor == pytest.approx(0.5)
    assert 5.0 * factors.scale == pytest.approx(2.0)


def test_decay_reference_is_scan_start_when_not_decay_corrected():
    sidecar = SIDECAR | {"ImageDecayCorrected": False, "ScanStart": 2 * 6586.2}
    assert suv_factors(sidecar).decay_factor == pytest.approx(0.25)


def test_units_are_converted():
    sidecar = SIDECAR | {"Units": "Bq/mL", "InjectedRadioactivity": 10.0}
    sidecar |= {"InjectedRadioactivityUnits": "mCi", "BodyWeight": 74000, "BodyWeightUnits": "g"}
    # 10 mCi = 370 MBq: same SUV per kBq/mL as the hand case
    assert 5000.0 * suv_factors(sidecar).scale == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["F18", "18F", "F-18", "^18F", "Fluorine-18"])
def test_radionuclide_spellings(name):
    assert radionuclide_key(name) == "F18"


@pytest.mark.parametrize(
    "field", ["BodyWeight", "InjectedRadioactivity", "TracerRadionuclide", "ScanStart", "Units"]
)
def test_missing_field_is_an_error_naming_file_and_fix(field):
    sidecar = {k: v for k, v in SIDECAR.items() if k != field}
    with pytest.raises(InputError) as error:
        suv_factors(sidecar, path="sub-01_pet.json")
    message = str(error.value)
    assert "sub-01_pet.json" in message and f"'{field}'" in message
    assert f"petct.suv.fallback.{field}" in message


def test_fallback_is_used_only_when_given_and_recorded():
    sidecar = {k: v for k, v in SIDECAR.items() if k != "BodyWeight"}
    factors = suv_factors(sidecar, {"BodyWeight": 74.0, "ScanStart": 1.0})
    assert 5.0 * factors.scale == pytest.approx(2.0)
    assert factors.fallbacks_used == {"BodyWeight": 74.0}  # ScanStart came from the sidecar
    with pytest.raises(InputError):
        suv_factors(sidecar, {"BodyWeight": None})


@pytest.mark.parametrize(
    "change",
    [
        {"BodyWeight": 0},
        {"BodyWeight": "heavy"},
        {"InjectedRadioactivity": -1},
        {"TracerRadionuclide": "Xx99"},
        {"Units": "counts"},
        {"InjectionStart": 9000.0},
        {"InjectedRadioactivity": math.nan},
    ],
)
def test_unusable_values_are_errors(change):
    with pytest.raises(InputError):
        suv_factors(SIDECAR | change)
