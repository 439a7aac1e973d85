"""common.config: `--set key.path=value` on a nested frozen config, type-checked, one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from common.config import ConfigError, apply_overrides, config_dict, format_config


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-4
    steps: int = 10
    kind: str = "qrm"
    clip: float | None = None


@dataclass(frozen=True)
class Outer:
    scale: str = "toy"
    inner: Inner = field(default_factory=Inner)
    seeds: tuple[int, ...] = (0, 1)
    flag: bool = False
    limit: int | None = None


def test_overrides_nested_and_typed():
    cfg = apply_overrides(
        Outer(), ["inner.lr=3e-4", "inner.steps=5", "seeds=[2, 3]", "flag=true", "limit=7", "inner.clip=1"]
    )
    assert cfg.inner == Inner(lr=3e-4, steps=5, clip=1.0)
    assert cfg.seeds == (2, 3) and cfg.flag is True and cfg.limit == 7
    assert isinstance(cfg.inner.clip, float)
    assert apply_overrides(Outer(), ["seeds=4"]).seeds == (4,)
    assert apply_overrides(Outer(limit=3), ["limit=null"]).limit is None
    assert apply_overrides(Outer(), ["inner.kind=orm"]).inner.kind == "orm"
    assert Outer() == Outer()  # the original is untouched (frozen)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("inner.lrr=1", r"unknown key 'lrr' in inner; valid: lr, steps, kind, clip"),
        ("nope=1", r"unknown key 'nope' in Outer; valid: scale, inner, seeds, flag, limit"),
        ("inner.steps=1.5", r"inner.steps: 1.5 is not an int"),
        ("flag=maybe", r"flag: 'maybe' is not true/false"),
        ("seeds=[a]", r"seeds: 'a' is not an int"),
        ("inner=3", r"inner: is a group"),
        ("seeds.x=1", r"'seeds' is a value, not a group"),
        ("noequals", r"expected key.path=value"),
    ],
)
def test_bad_overrides_are_one_line(assignment, message):
    with pytest.raises(ConfigError, match=message) as err:
        apply_overrides(Outer(), [assignment])
    assert "\n" not in str(err.value)


def test_format_and_dict():
    text = format_config(Outer())
    assert "inner.lr = 0.0001" in text and "seeds = [0, 1]" in text
    assert config_dict(Outer())["inner"]["steps"] == 10
