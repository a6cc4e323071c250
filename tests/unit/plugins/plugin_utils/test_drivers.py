"""Every driver in plugin_utils/drivers/ keeps the interface the engine calls (drivers/base.py): a kind is one module,
found by its name, whose methods take every argument the engine passes."""

from __future__ import annotations

import inspect
import pkgutil

import pytest

from ansible_collections.keywarden.secrets.plugins.plugin_utils import drivers
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import KIND_STORED_FIELDS
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Driver

KINDS = sorted(module.name for module in pkgutil.iter_modules(drivers.__path__) if driver_for(module.name) is not None)
INTERFACE = [name for name, member in vars(Driver).items() if inspect.isfunction(member) and not name.startswith("_")]


def test_every_driver_module_is_a_kind_of_the_catalog() -> None:
    assert KINDS, "no driver found"
    assert set(KINDS) <= set(KIND_STORED_FIELDS), "a driver for a kind the catalog does not know"
    assert {driver_for(kind).kind for kind in KINDS} == set(KINDS)  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", KINDS)
def test_a_driver_takes_every_argument_the_engine_passes(kind: str) -> None:
    driver = driver_for(kind)
    assert isinstance(driver, Driver)
    for name in INTERFACE:
        base = list(inspect.signature(getattr(Driver, name)).parameters)
        mine = inspect.signature(getattr(type(driver), name)).parameters
        accepts_any = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in mine.values())
        missing = [param for param in base if param not in mine]
        assert accepts_any or not missing, f"{kind}: {name}() does not take {', '.join(missing)} (drivers/base.py)"


def test_a_kind_without_a_module_has_no_driver() -> None:
    assert driver_for("no_such_kind") is None and driver_for("base") is None
