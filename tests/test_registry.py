from __future__ import annotations

import pytest

from cimkit.errors import ConfigError
from cimkit.registry import Registry


def test_register_list_describe_and_lookup() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("resnet20", 1, "a resnet")
    reg.register("resnet32", "another")(2)
    reg.add("lenet5", 3, "old")
    assert reg.list("res*") == ["resnet20", "resnet32"]
    assert reg.describe("len*") == [("lenet5", "old")]
    assert reg.get("resnet32") == 2 and "lenet5" in reg and len(reg) == 3
    with pytest.raises(ConfigError, match=r"unknown thing 'lenet' \(did you mean 'lenet5'\?\)"):
        reg.get("lenet")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("lenet5", 4)


def test_top_level_verbs_resolve() -> None:
    import cimkit
    from cimkit.mixed import mixed_precision
    from cimkit.quant import quantize_

    assert cimkit.quantize_ is quantize_ and cimkit.mixed_precision is mixed_precision
    with pytest.raises(AttributeError):
        cimkit.no_such_verb  # noqa: B018


def test_plugin_discovery_runs_once_unless_refreshed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every transform calls load_plugins; the discovery (subpackages on disk, entry points) runs once
    per process, and again only when asked."""
    from cimkit import plugins

    calls = []
    real = plugins._entry_point_modules
    monkeypatch.setattr(plugins, "_entry_point_modules", lambda: calls.append(1) or real())
    monkeypatch.setattr(plugins, "_discovered", None)
    plugins.load_plugins()
    plugins.load_plugins()
    assert len(calls) == 1
    plugins.load_plugins(refresh=True)
    assert len(calls) == 2
    assert "cimkit.quant.plugin" in plugins._discovered  # the built-in concerns were found
