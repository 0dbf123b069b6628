"""Method cards: read from the source without torch, equal to what the registry holds, and
what the config checks derive from them."""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from neuroadapt.errors import ConfigError
from neuroadapt.method_cards import BACKBONE_KINDS, MethodCard, _decorator_cards, method_cards

DEFAULT = yaml.safe_load((Path(__file__).parent.parent / "config" / "config.yaml").read_text())


@pytest.fixture
def demo_config() -> dict:
    return copy.deepcopy(DEFAULT)


def test_cards_read_from_the_source_are_the_registered_ones():
    from neuroadapt.methods import available_methods, get_method

    cards = method_cards()
    assert sorted(cards) == available_methods()
    for name, card in cards.items():
        assert get_method(name).card == card


def test_reading_the_cards_does_not_import_torch():
    code = (
        "import sys; import neuroadapt.config, neuroadapt.experiments; "
        "from neuroadapt.method_cards import method_cards; method_cards(); "
        "print('torch' in sys.modules, len(method_cards()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "17"]


def test_every_card_names_the_constructors_tunable_settings_with_their_defaults():
    from neuroadapt.methods import get_method

    for name, card in method_cards().items():
        parameters = inspect.signature(get_method(name).__init__).parameters
        tunable = {
            n: p.default for n, p in parameters.items() if n == "r" or n == "lr" or n[:3] == "lr_"
        }
        assert card.tunable == tunable, name


def test_the_experiments_backbone_kinds_are_the_cards():
    from neuroadapt.experiments import BACKBONE_KINDS as KINDS

    assert sorted(KINDS) == sorted(BACKBONE_KINDS)
    assert {card.backbones for card in method_cards().values()} <= set(KINDS)


def test_a_new_method_module_is_found_by_its_card(tmp_path):
    module = tmp_path / "ia3.py"
    module.write_text(
        textwrap.dedent(
            """
            @register_method(
                "ia3",
                paper="IA3 (arXiv 2205.05638)",
                family="image",
                tasks=("binary",),
                backbones="features",
                tunable={"lr_adapters": 3e-3},
            )
            class IA3:
                pass
            """
        )
    )
    (card,) = _decorator_cards(module)
    assert card == MethodCard(
        name="ia3",
        paper="IA3 (arXiv 2205.05638)",
        family="image",
        tasks=("binary",),
        backbones="features",
        tunable={"lr_adapters": 3e-3},
    )


def test_a_card_that_is_not_a_literal_is_refused_with_its_place(tmp_path):
    module = tmp_path / "odd.py"
    module.write_text(
        'RANK = 4\n\n@register_method("odd", tunable={"r": RANK})\nclass Odd:\n    pass\n'
    )
    with pytest.raises(ValueError, match=r"odd.py:3: register_method needs .* literals"):
        _decorator_cards(module)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": "vision"}, "family 'vision' not in"),
        ({"backbones": "cnn"}, "backbones 'cnn' not in"),
        ({"tunable": {"dropout": 0.1}}, r"tunable \['dropout'\] are not lr"),
    ],
)
def test_an_impossible_card_is_refused(change, message):
    card = dict(name="m", paper="p", family="image", tasks=("binary",), backbones="features")
    with pytest.raises(ValueError, match=message):
        MethodCard(**{**card, **change})


def test_a_method_on_the_wrong_task_is_refused_with_what_trains_there(demo_config):
    from neuroadapt.config import validate_config

    demo_config["experiments"]["adhd_dti"]["methods"] = ["linear_probe", "pemma"]
    with pytest.raises(ConfigError) as error:
        validate_config(demo_config)
    text = str(error.value)
    assert "pemma cannot be trained on task 'binary'" in text
    assert "the train rule trains dora, full_finetune, linear_probe, lora, molre, scratch" in text
    assert "segmentation+survival on CT and PET: ct_only, early_fusion, pemma" in text
