"""Input checks for the `evaluate` modules under metrics/: a bad column stops with one clear line.

`evaluate` itself reports a wrong-length or wrong-type column as a pyarrow error several lines long, or
casts silently (7 -> "7"). Each module under metrics/ mixes in `CheckedColumns` and declares its columns'
kinds, so `add`, `add_batch` and `compute` raise one `ValueError` naming the module, the column and the
index first:

    processbench_f1: references[3] is str 'x', expected int

This module does not import `evaluate` (common/ stays importable without it); the mixin is a plain class,
so `evaluate.load`, which takes the first `EvaluationModule` subclass in a module, never picks it.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral


def _is_str(x: object) -> bool:
    return isinstance(x, str)


def _is_int(x: object) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_str_list(x: object) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(y, str) for y in x)


def _is_labels(x: object) -> bool:
    return _is_str_list(x) and len(x) > 0


# kind -> (test, what the message says is expected, whether the message shows the value's type)
KINDS: dict[str, tuple[Callable[[object], bool], str, bool]] = {
    "str": (_is_str, "str", True),
    "int": (_is_int, "int", True),
    "str_list": (_is_str_list, "a list of str", False),
    "labels": (_is_labels, "a non-empty list of str", False),
}


def check_columns(name: str, kinds: dict[str, str], **columns: object) -> None:
    """One ValueError line for columns of unequal length or an entry not of its column's kind.

    `kinds` maps a column to one of KINDS; a column passed as None (not given) is skipped, and a column
    without a kind is only length-checked."""
    given = {key: value for key, value in columns.items() if value is not None}
    for key, value in given.items():
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):  # a list, tuple, array
            raise ValueError(f"{name}: {key} is {type(value).__name__} {value!r:.40}, expected a list")
    lengths = {key: len(value) for key, value in given.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"{name}: columns of unequal length: " + ", ".join(f"{k}={v}" for k, v in lengths.items())
        )
    for key, value in given.items():
        if key not in kinds:
            continue
        test, expected, show_type = KINDS[kinds[key]]
        for i, x in enumerate(value):
            if not test(x):
                shown = f"{type(x).__name__} {x!r:.40}" if show_type else f"{x!r:.40}"
                raise ValueError(f"{name}: {key}[{i}] is {shown}, expected {expected}")


class CheckedColumns:
    """Mixin for an `evaluate.Metric`: `add` / `add_batch` (and so `compute`) check their input first.

    A subclass sets `metric_name` (the first word of every message) and `column_kinds` (column -> kind
    of KINDS, for predictions, references and the module's other features)."""

    metric_name: str = "metric"
    column_kinds: dict[str, str] = {}

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of rows, checked first (one clear line on bad input)."""
        check_columns(
            self.metric_name, self.column_kinds, predictions=predictions, references=references, **kwargs
        )
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one row, checked first."""
        singles = {key: [value] for key, value in kwargs.items()}
        check_columns(
            self.metric_name, self.column_kinds, predictions=[prediction], references=[reference], **singles
        )
        return super().add(prediction=prediction, reference=reference, **kwargs)
