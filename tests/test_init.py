"""The package's public API: every re-exported name resolves to the module the map names."""
import importlib

import pytest

import lessons_lib


@pytest.mark.parametrize("name", sorted(lessons_lib._PUBLIC))
def test_every_public_name_resolves_to_its_module(name):
    module = importlib.import_module(f"lessons_lib.{lessons_lib._PUBLIC[name]}")
    assert getattr(lessons_lib, name) is getattr(module, name)


def test_unknown_name_is_a_clear_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lessons_lib.nope
