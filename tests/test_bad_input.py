"""Every public function refuses every bad value of every parameter with a clear error, in time.

The table (``tests/bad_input_table.py``) holds one valid call per public function and the bad values each
parameter must refuse. Three tests:

- each bad value -> ValueError / TypeError / MemoryError whose message names the parameter, within 10 s;
- each valid call succeeds (so the bad calls fail for the bad value, not for the rest of the call);
- completeness: every public function of every ``mbook`` module is in the table, or in
  ``NOT_YET_IN_THE_TABLE`` below (the debt, listed by name). New public code fails here until entered.
"""

import importlib
import inspect
import pathlib
import pkgutil
import sys

import pytest

import mbook

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # the table is data beside this file (importlib mode)
from bad_input_table import TABLE, public_functions, run_bad_call  # noqa: E402

# The debt: public functions not yet in the table, by name (packages whose rows are still to be written).
# Empty: every public function has a row. A public function added anywhere fails the completeness test until
# it has a row (or is listed here by name, as visible debt).
NOT_YET_IN_THE_TABLE: set = set()


def _all_modules():
    return sorted(info.name for info in pkgutil.walk_packages(mbook.__path__, "mbook."))


def _bad_cases():
    for key in sorted(TABLE):
        entry = TABLE[key]
        for parameter in entry.parameters:
            for label, make in entry.bad_values(parameter):
                yield pytest.param(entry, parameter, make, id=f"{key}-{parameter}={label}")


@pytest.mark.parametrize("entry, parameter, make_bad", list(_bad_cases()))
def test_a_bad_value_is_refused_naming_the_parameter(entry, parameter, make_bad):
    outcome, detail = run_bad_call(entry, parameter, make_bad, seconds=10)
    assert outcome == "clear", f"{entry.key}({parameter}=bad): {outcome}: {detail}"


@pytest.mark.parametrize("key", sorted(TABLE))
def test_the_valid_call_succeeds(key):
    TABLE[key].call()


@pytest.mark.parametrize("key", sorted(TABLE))
def test_every_parameter_is_in_the_row(key):
    """Each parameter is a decision (bad values or FREE), so a new parameter cannot slip past the table."""
    entry = TABLE[key]
    parameters = set(inspect.signature(entry.function).parameters)
    assert set(entry.parameters) == parameters, (
        f"{key}: row names {sorted(set(entry.parameters) - parameters)} not in the signature, "
        f"misses {sorted(parameters - set(entry.parameters))}")


def test_every_public_function_is_in_the_table():
    missing, both = [], []
    for module_name in _all_modules():
        module = importlib.import_module(module_name)
        for name in public_functions(module):
            key = f"{module_name[len('mbook.'):]}.{name}"
            if key in TABLE and key in NOT_YET_IN_THE_TABLE:
                both.append(key)
            elif key not in TABLE and key not in NOT_YET_IN_THE_TABLE:
                missing.append(key)
    assert not missing, f"public functions missing from tests/bad_input_table.py: {missing}"
    assert not both, f"in the table and in NOT_YET_IN_THE_TABLE (remove them from the latter): {both}"


def test_the_table_names_only_existing_functions():
    stale = [key for key, entry in TABLE.items() if not hasattr(importlib.import_module(entry.module), entry.name)]
    assert not stale, f"rows for functions that no longer exist: {stale}"


def test_the_debt_names_only_existing_functions():
    existing = set()
    for module_name in _all_modules():
        module = importlib.import_module(module_name)
        existing |= {f"{module_name[len('mbook.'):]}.{name}" for name in public_functions(module)}
    stale = sorted(NOT_YET_IN_THE_TABLE - existing)
    assert not stale, f"NOT_YET_IN_THE_TABLE names functions that no longer exist (remove them): {stale}"
