"""common.metric_inputs: the one input check every `evaluate` module under metrics/ shares."""

import numpy as np
import pytest

from common.metric_inputs import KINDS, CheckedColumns, check_columns

KINDS_OF = {"predictions": "str", "references": "labels", "steps": "int", "tools": "str_list"}


def test_good_columns_pass():
    check_columns(
        "m",
        KINDS_OF,
        predictions=["a", "b"],
        references=[["A"], ("B", "C")],
        steps=[0, np.int64(-1)],
        tools=[[], ["t"]],
    )
    check_columns("m", KINDS_OF, predictions=["a"], references=None)  # a column not given is skipped
    check_columns("m", KINDS_OF, predictions=np.array(["a", "b"]), steps=np.array([3, -1]))  # arrays too


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            {"predictions": ["a"], "references": [["A"], ["B"]]},
            "m: columns of unequal length: predictions=1, references=2",
        ),
        ({"predictions": ["a", 7]}, "m: predictions[1] is int 7, expected str"),
        ({"predictions": "ab"}, "m: predictions is str 'ab', expected a list"),
        ({"references": [[]]}, "m: references[0] is [], expected a non-empty list of str"),
        ({"references": ["A"]}, "m: references[0] is 'A', expected a non-empty list of str"),
        ({"steps": [1, True]}, "m: steps[1] is bool True, expected int"),
        ({"steps": [1.0]}, "m: steps[0] is float 1.0, expected int"),
        ({"tools": [["t", 3]]}, "m: tools[0] is ['t', 3], expected a list of str"),
    ],
)
def test_each_bad_column_is_one_line(columns, message):
    with pytest.raises(ValueError) as info:
        check_columns("m", KINDS_OF, **columns)
    assert str(info.value) == message


def test_every_kind_rejects_something_and_accepts_something():
    samples = {"str": ("x", 1), "int": (3, "3"), "str_list": (["x"], "x"), "labels": (["x"], [])}
    assert set(samples) == set(KINDS)
    for kind, (good, bad) in samples.items():
        test = KINDS[kind][0]
        assert test(good) and not test(bad), kind


class _Recorder:
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        return ("batch", predictions, references, kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        return ("one", prediction, reference, kwargs)


class _Checked(CheckedColumns, _Recorder):
    metric_name = "toy"
    column_kinds = {"predictions": "str", "references": "int", "groups": "str"}


def test_the_mixin_checks_then_hands_on():
    metric = _Checked()
    assert metric.add_batch(predictions=["a"], references=[1], groups=["g"]) == (
        "batch",
        ["a"],
        [1],
        {"groups": ["g"]},
    )
    assert metric.add(prediction="a", reference=1, groups="g") == ("one", "a", 1, {"groups": "g"})
    with pytest.raises(ValueError, match=r"^toy: groups\[0\] is int 5, expected str$"):
        metric.add(prediction="a", reference=1, groups=5)
    with pytest.raises(
        ValueError, match=r"^toy: columns of unequal length: predictions=2, references=1, groups=1$"
    ):
        metric.add_batch(predictions=["a", "b"], references=[1], groups=["g"])
