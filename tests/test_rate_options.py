"""`rate`'s options are declared once (rate/options.py): the CLI's flags, the library's RateOptions and a
recipe's rate section read one default and one help text each."""

from __future__ import annotations

import inspect

import pytest

from alpagasus.cli.rate import rate as rate_command
from alpagasus.engine.types import RunOptions
from alpagasus.errors import UserError
from alpagasus.rate.options import FLAGS, RateOptions, flag_default, from_flags
from alpagasus.rate.plan import CascadeOptions
from alpagasus.run.recipe import DEFAULTS, RATE_KEYS


def test_every_flag_is_a_cli_option_with_its_declared_default_and_help():
    params = inspect.signature(rate_command).parameters
    for f in FLAGS:
        opt = params[f.name].default  # a typer OptionInfo built from the declaration
        assert opt.default == flag_default(f) and opt.help == f.help and opt.rich_help_panel == f.panel, f.name
    assert flag_default(next(f for f in FLAGS if f.name == "max_attempts")) == RunOptions().max_attempts
    assert flag_default(next(f for f in FLAGS if f.name == "cascade_recall")) == CascadeOptions().recall
    assert len({f.name for f in FLAGS}) == len(FLAGS)


def test_flat_values_go_where_the_declaration_says():
    o = from_flags(
        {
            "judge": "openai:m",
            "base_url": "http://127.0.0.1:9/v1",
            "concurrency": None,  # left to the judge
            "price_in": 2.0,
            "max_outage": 5.0,
            "store": "s.sqlite",
            "field": ["instruction=q"],
            "format": "messages",
            "seed": 7,
            "cascade": True,
            "cascade_recall": 0.9,
        }
    )
    assert (o.judge, o.store_path, o.field_map, o.format, o.seed) == (
        "openai:m",
        "s.sqlite",
        ["instruction=q"],
        "messages",
        7,
    )
    assert o.judge_options == {"base_url": "http://127.0.0.1:9/v1"}
    assert (o.options.price_in, o.options.max_outage_s, o.options.max_attempts) == (2.0, 5.0, 5)
    c = o.cascade_options()
    assert c is not None and (c.recall, c.seed, c.precision) == (0.9, 7, 0.95)
    assert from_flags({}).cascade_options() is None and from_flags({}) == RateOptions()
    with pytest.raises(UserError, match="does not take cascade_recal"):
        from_flags({"cascade_recal": 0.9})
    with pytest.raises(UserError, match="limit must be 0 or more"):
        from_flags({"limit": -1})


def test_a_recipe_rate_section_starts_from_the_same_defaults():
    by_name = {f.name: f for f in FLAGS}
    assert {k: DEFAULTS["rate"][k] for k in RATE_KEYS} == {k: flag_default(by_name[k]) for k in RATE_KEYS}
