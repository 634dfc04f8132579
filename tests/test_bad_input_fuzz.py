"""Fuzz of the bad-input table: drawn bad numbers, not only the table's fixed ones.

For every parameter whose row holds one of the numeric kinds of ``tests/bad_input_table.py`` (``LENGTH``,
``NONNEG`` (and ``TOL``, the same values), ``FRACTION``, ``COUNT``, ``COUNT0``, ``SEED``), Hypothesis draws values outside the
kind's valid range (any negative float for a length, 0.5 and -3 for a count, 1 + 1e-9 for a fraction, ...)
and each must be refused naming the parameter, in time. The draws are derandomized: the same values on
every run.
"""

import math
import pathlib
import sys

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import bad_input_table as table  # noqa: E402

NAN_OR_INF = st.sampled_from([math.nan, math.inf, -math.inf])
NEGATIVE = st.floats(max_value=0.0, exclude_max=True, allow_nan=False)  # -inf .. -5e-324
NOT_AN_INTEGER = st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != int(v))

# The values each kind must refuse, as strategies (the kind's fixed values are in the table's own test).
OUTSIDE = {
    "LENGTH": st.one_of(NEGATIVE, st.just(0.0), st.just(0), NAN_OR_INF),
    "NONNEG": st.one_of(NEGATIVE, NAN_OR_INF),
    "FRACTION": st.one_of(NEGATIVE, st.floats(min_value=1.0, exclude_min=True), st.just(math.nan)),
    "COUNT": st.one_of(st.integers(max_value=0), NOT_AN_INTEGER, st.booleans()),
    "COUNT0": st.one_of(st.integers(max_value=-1), NOT_AN_INTEGER, st.booleans()),
    "SEED": st.one_of(st.integers(max_value=-1), NOT_AN_INTEGER),
}


def _kind(bad_values):
    """The numeric kind a row's list starts from (rows write ``LENGTH`` or ``LENGTH + [...]``)."""
    labels = [repr(v) for v in bad_values]
    for name in OUTSIDE:
        kind = [repr(v) for v in getattr(table, name)]
        if labels[:len(kind)] == kind:
            return name
    return None


def _cases():
    for key in sorted(table.TABLE):
        entry = table.TABLE[key]
        for parameter, bad_values in entry.parameters.items():
            kind = _kind(bad_values)
            if kind is not None:
                yield pytest.param(entry, parameter, kind, id=f"{key}-{parameter}:{kind}")


CASES = list(_cases())


def test_the_fuzz_covers_the_numeric_parameters():
    # a change of the kinds' spelling would silently empty this file's test
    assert len(CASES) > 500
    assert {kind for *_, kind in (case.values for case in CASES)} == set(OUTSIDE)


@pytest.mark.parametrize("entry, parameter, kind", CASES)
def test_drawn_bad_numbers_are_refused_naming_the_parameter(entry, parameter, kind):
    @settings(max_examples=6, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(OUTSIDE[kind])
    def refused(value):
        outcome, detail = table.run_bad_call(entry, parameter, lambda: value, seconds=10)
        assert outcome == "clear", f"{entry.key}({parameter}={value!r}): {outcome}: {detail}"

    refused()
