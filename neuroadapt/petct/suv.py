"""Body-weight standardised uptake value (SUV_bw) from a PET image and its BIDS sidecar.

    SUV_bw = C / (A * 2**(-dt / T) / W)

C: activity concentration (Bq/mL, from ``Units``); A: injected activity (Bq, from
``InjectedRadioactivity`` + ``InjectedRadioactivityUnits``); W: body weight (g, from
``BodyWeight`` + ``BodyWeightUnits``; 1 mL of tissue taken as 1 g); T: half-life of
``TracerRadionuclide`` (s); dt (s): from the injection (``InjectionStart``) to the time the
image is decay corrected to (``ImageDecayCorrectionTime`` when ``ImageDecayCorrected`` is
true, else ``ScanStart``). Times are relative to BIDS ``TimeZero``.

A field missing from the sidecar is an error unless the config gives a value for it
(``petct.suv.fallback``); a value used that way is recorded in the output sidecar.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from neuroadapt.errors import InputError

# Physical half-lives in seconds (NIST / DDEP).
HALF_LIFE_S = {
    "F18": 6586.2,
    "C11": 1221.8,
    "N13": 597.9,
    "O15": 122.24,
    "Ga68": 4062.6,
    "Cu64": 45720.0,
    "Zr89": 282240.0,
    "Rb82": 76.38,
}
ACTIVITY_UNITS_BQ = {"Bq": 1.0, "kBq": 1e3, "MBq": 1e6, "GBq": 1e9, "mCi": 3.7e7, "uCi": 3.7e4}
CONCENTRATION_UNITS_BQ_PER_ML = {
    f"{unit}/{volume}": scale / volume_ml
    for unit, scale in ACTIVITY_UNITS_BQ.items()
    for volume, volume_ml in (("mL", 1.0), ("ml", 1.0), ("cc", 1.0), ("L", 1000.0))
}
WEIGHT_UNITS_G = {"kg": 1000.0, "g": 1.0, "lb": 453.59237}

# Sidecar fields SUV needs, with the unit a fallback value is given in.
REQUIRED_FIELDS = {
    "Units": "a concentration unit such as Bq/mL",
    "InjectedRadioactivity": "MBq unless InjectedRadioactivityUnits says otherwise",
    "BodyWeight": "kg unless BodyWeightUnits says otherwise",
    "TracerRadionuclide": f"one of {', '.join(HALF_LIFE_S)}",
    "InjectionStart": "s after TimeZero",
    "ScanStart": "s after TimeZero",
}
DEFAULT_UNITS = {"InjectedRadioactivityUnits": "MBq", "BodyWeightUnits": "kg"}


@dataclass(frozen=True)
class SuvFactors:
    """What SUV was computed from: ``suv = image * scale``."""

    scale: float
    concentration_unit: str
    injected_bq: float
    body_weight_g: float
    radionuclide: str
    half_life_s: float
    decay_time_s: float
    decay_factor: float
    fallbacks_used: dict = field(default_factory=dict)

    def as_sidecar(self) -> dict:
        return {
            "Units": "g/mL",
            "SUVType": "body weight (SUVbw)",
            "SUVScaleFactor": self.scale,
            "SourceUnits": self.concentration_unit,
            "InjectedRadioactivityBq": self.injected_bq,
            "BodyWeightGrams": self.body_weight_g,
            "TracerRadionuclide": self.radionuclide,
            "HalfLifeSeconds": self.half_life_s,
            "DecayTimeSeconds": self.decay_time_s,
            "DecayFactor": self.decay_factor,
            "SUVFallbacksFromConfig": dict(self.fallbacks_used),
        }


def radionuclide_key(name: str) -> str | None:
    """'F18', '18F', 'F-18', '^18F', 'fluorine-18'... -> 'F18' (None if unknown)."""
    text = str(name).replace("^", "").replace("-", "").replace(" ", "").lower()
    text = text.replace("fluorine", "f").replace("carbon", "c").replace("gallium", "ga")
    match = re.fullmatch(r"([a-z]+)(\d+)|(\d+)([a-z]+)", text)
    if not match:
        return None
    symbol, number = (match[1], match[2]) if match[1] else (match[4], match[3])
    key = symbol.capitalize() + number
    return key if key in HALF_LIFE_S else None


def suv_factors(
    sidecar: Mapping, fallback: Mapping | None = None, path: str | Path = "<PET sidecar>"
) -> SuvFactors:
    """The factor turning the PET image into SUV_bw; InputError naming ``path`` on a missing
    or unusable field (a field absent from ``sidecar`` is taken from ``fallback`` if given
    there and not null)."""
    fallback = {k: v for k, v in (fallback or {}).items() if v is not None}
    values, used = {}, {}
    for name, unit in REQUIRED_FIELDS.items():
        value = sidecar.get(name)
        if value is None and name in fallback:
            value = used[name] = fallback[name]
        if value is None:
            raise InputError(
                path,
                f"has no '{name}' ({unit}), which SUV needs",
                f"add it to the sidecar, or set petct.suv.fallback.{name} in the config",
            )
        values[name] = value
    # A fallback value is in the default unit; the sidecar's unit applies to its own value.
    for name, default in DEFAULT_UNITS.items():
        given = name.removesuffix("Units") in used
        values[name] = default if given else sidecar.get(name, default)

    def lookup(table: Mapping, name: str):
        unit = values[name]
        if unit not in table:
            raise InputError(
                path,
                f"has {name} '{unit}', a unit SUV conversion does not know",
                f"use one of {', '.join(table)}",
            )
        return table[unit]

    bq_per_unit = lookup(CONCENTRATION_UNITS_BQ_PER_ML, "Units")
    injected = _positive(values["InjectedRadioactivity"], "InjectedRadioactivity", path)
    injected_bq = injected * lookup(ACTIVITY_UNITS_BQ, "InjectedRadioactivityUnits")
    weight = _positive(values["BodyWeight"], "BodyWeight", path)
    weight_g = weight * lookup(WEIGHT_UNITS_G, "BodyWeightUnits")
    nuclide = radionuclide_key(values["TracerRadionuclide"])
    if nuclide is None:
        raise InputError(
            path,
            f"has TracerRadionuclide '{values['TracerRadionuclide']}' of unknown half-life",
            f"use one of {', '.join(HALF_LIFE_S)}",
        )
    if sidecar.get("ImageDecayCorrected") is True and "ImageDecayCorrectionTime" in sidecar:
        reference = sidecar["ImageDecayCorrectionTime"]
    else:
        reference = values["ScanStart"]
    decay_time = float(reference) - float(values["InjectionStart"])
    if decay_time < 0 or not math.isfinite(decay_time):
        raise InputError(
            path,
            f"puts the decay reference time {decay_time:g} s before the injection",
            "check InjectionStart, ScanStart and ImageDecayCorrectionTime (s after TimeZero)",
        )
    half_life = HALF_LIFE_S[nuclide]
    decay = 2.0 ** (-decay_time / half_life)
    scale = bq_per_unit * weight_g / (injected_bq * decay)
    return SuvFactors(
        scale=scale,
        concentration_unit=values["Units"],
        injected_bq=injected_bq,
        body_weight_g=weight_g,
        radionuclide=nuclide,
        half_life_s=half_life,
        decay_time_s=decay_time,
        decay_factor=decay,
        fallbacks_used=used,
    )


def _positive(value, name: str, path) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number > 0 or not math.isfinite(number):
        raise InputError(path, f"has {name} = {value!r}", f"give a positive number for {name}")
    return number


def to_suv(activity: sitk.Image, factors: SuvFactors) -> sitk.Image:
    """SUV_bw image (float32, same grid) from the activity-concentration image."""
    return sitk.Cast(activity, sitk.sitkFloat32) * factors.scale
