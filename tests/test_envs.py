"""Every rule names a conda env and a log; every env file parses, pins its packages, and
provides what the scripts of its rules import (directly or through the neuroadapt package)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n((?:(?:    .*)?\n)+)", re.MULTILINE)
DIRECTIVE = re.compile(r"^    (\w+):\n((?:        .*\n)+)", re.MULTILINE)

# Import name -> distribution name on PyPI, where they differ.
DISTRIBUTION = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "bids": "pybids",
    "iterstrat": "iterative-stratification",
    "SimpleITK": "simpleitk",
    "skimage": "scikit-image",
    "sksurv": "scikit-survival",
}


def rules() -> dict[str, dict[str, str]]:
    """rule name -> {directive: first value}, from the snakefmt-formatted rule files."""
    found = {}
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        for name, body in RULE.findall(path.read_text()):
            directives = {
                d: v.strip().splitlines()[0].strip().strip(",").strip('"')
                for d, v in DIRECTIVE.findall(body + "\n")
            }
            found[name] = directives | {"_file": str(path)}
    return found


def third_party_imports(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level modules imported by ``path``, following imports of the neuroadapt package
    (function-level imports included)."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top == "neuroadapt":
                target = _module_file(module)
                if target:
                    names |= third_party_imports(target, seen)
            elif top not in sys.stdlib_module_names and top != "__future__":
                names.add(top)
    return names


def _module_file(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def env_packages(env_file: Path) -> dict[str, str]:
    """package -> version spec of a conda env file (pip entries included)."""
    spec = yaml.safe_load(env_file.read_text())
    packages = {}
    for entry in spec["dependencies"]:
        for item in entry["pip"] if isinstance(entry, dict) else [entry]:
            item = item.split("::")[-1]  # channel::package=version
            match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:==|=|>=|~=)?\s*(.*)$", item)
            packages[match.group(1).lower()] = match.group(2)
    return packages


RULES = rules()


def test_rule_files_were_parsed():
    assert {"all", "demo_dataset", "ingest", "splits"} <= set(RULES)


@pytest.mark.parametrize("name", sorted(set(RULES) - {"all"}))
def test_every_rule_has_a_conda_env_and_a_log(name):
    rule = RULES[name]
    assert "conda" in rule and "log" in rule, f"rule {name} in {rule['_file']} lacks conda: or log:"
    env_file = (Path(rule["_file"]).parent / rule["conda"]).resolve()
    assert env_file.is_file(), f"rule {name}: {env_file} does not exist"


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_files_parse_and_pin_every_package(env_file):
    spec = yaml.safe_load(env_file.read_text())
    assert spec["channels"][0] == "conda-forge"
    packages = env_packages(env_file)
    unpinned = [name for name, version in packages.items() if name != "pip" and not version]
    assert unpinned == [], f"{env_file.name}: unpinned {unpinned}"
    assert packages["python"] == "3.11"


@pytest.mark.parametrize("name", sorted(n for n, r in RULES.items() if "script" in r))
def test_env_provides_what_the_rule_script_imports(name):
    rule = RULES[name]
    base = Path(rule["_file"]).parent
    script = (base / rule["script"]).resolve()
    env_file = (base / rule["conda"]).resolve()
    packages = env_packages(env_file)
    needed = {DISTRIBUTION.get(module, module).lower() for module in third_party_imports(script)}
    needed -= {"snakemake"}  # scripts run inside snakemake, which provides its own module
    missing = sorted(needed - set(packages))
    assert missing == [], f"{env_file.name} lacks {missing} imported by {script.name}"


def test_env_pins_are_the_tested_versions():
    """Every Python package of an env is the exact version installed where the tests run
    (pip pins from PyPI: several are not on conda-forge); conda gives only Python and the
    MRtrix3 binaries."""
    from importlib.metadata import version

    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        spec = yaml.safe_load(env_file.read_text())
        conda = [e for e in spec["dependencies"] if isinstance(e, str)]
        assert {c.split("=")[0].split("::")[-1] for c in conda} <= {"python", "pip", "mrtrix3"}
        pip = next(e["pip"] for e in spec["dependencies"] if isinstance(e, dict))
        for item in pip:
            name, pin = item.split("==")
            installed = version(name).split("+")[0]  # torch 2.13.0+cpu here
            assert installed == pin, f"{env_file.name}: {name}=={pin}, tests run {installed}"
            assert CONSTRAINTS.get(name) == pin, (
                f"{env_file.name}: {name}=={pin}, requirements/constraints.txt (what make "
                f"installs) has {CONSTRAINTS.get(name)}"
            )


#: requirements/constraints.txt, name -> version: what `make` installs the tests with
CONSTRAINTS = dict(
    line.split("==")
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
    if line and not line.startswith("#")
)


def test_the_mrtrix3_backend_comes_from_the_mrtrix3_channel():
    spec = yaml.safe_load((REPO / "envs" / "dwi.yaml").read_text())
    assert "mrtrix3" in spec["channels"] and "mrtrix3::mrtrix3=3.0.3" in spec["dependencies"]
