"""The provider registry: names, registration rules, entry-point plug-ins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from quantivista.clock import Clock, TestClock
from quantivista.config import Settings
from quantivista.errors import NotFoundError
from quantivista.model.instruments import AssetClass
from quantivista.providers import registry as registry_module
from quantivista.providers.base import Provider, ProviderCapabilities
from quantivista.providers.registry import ENTRY_POINT_GROUP, ProviderRegistry, register

CAPS = ProviderCapabilities(
    asset_classes=frozenset({AssetClass.EQUITY}), timeframes=frozenset({"1d"})
)


class Alpha(Provider):
    name = "alpha"
    capabilities = CAPS


class Beta(Provider):
    name = "Beta"
    capabilities = CAPS


class Configured(Provider):
    name = "configured"
    capabilities = CAPS

    def __init__(self, seed: int, clock: Clock) -> None:
        self.seed = seed
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> Provider:
        return cls(settings.simulator.seed, clock)


class Nameless(Provider):
    capabilities = CAPS


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: Any

    def load(self) -> Any:
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


@pytest.fixture
def reg() -> ProviderRegistry:
    return ProviderRegistry(load_entry_points=False)


def test_register_and_get_case_insensitively(reg: ProviderRegistry) -> None:
    assert reg.register(Alpha) is Alpha
    reg.register(Beta)
    assert reg.get("alpha") is Alpha
    assert reg.get("ALPHA") is Alpha
    assert reg.get("beta") is Beta
    assert reg.names() == ["alpha", "beta"]
    assert "Alpha" in reg and "beta" in reg
    assert "gamma" not in reg
    assert 42 not in reg


def test_register_under_another_name(reg: ProviderRegistry) -> None:
    reg.register(Alpha, name="Mirror")
    assert reg.get("mirror") is Alpha
    assert reg.names() == ["mirror"]


def test_registering_the_same_class_twice_is_harmless(reg: ProviderRegistry) -> None:
    reg.register(Alpha)
    reg.register(Alpha)
    assert reg.names() == ["alpha"]


def test_a_taken_name_needs_replace(reg: ProviderRegistry) -> None:
    reg.register(Alpha)
    with pytest.raises(ValueError, match="'alpha' is already registered"):
        reg.register(Beta, name="alpha")
    assert reg.get("alpha") is Alpha
    reg.register(Beta, name="alpha", replace=True)
    assert reg.get("alpha") is Beta


def test_a_provider_without_a_name_is_refused(reg: ProviderRegistry) -> None:
    with pytest.raises(ValueError, match="Nameless has no provider name"):
        reg.register(Nameless)


def test_unknown_provider_raises_not_found_with_the_known_names(reg: ProviderRegistry) -> None:
    reg.register(Alpha)
    reg.register(Beta)
    with pytest.raises(NotFoundError, match="unknown provider") as info:
        reg.get("gamma")
    assert info.value.context["provider"] == "gamma"
    assert info.value.context["known"] == "alpha, beta"


def test_create_builds_from_settings_and_clock(reg: ProviderRegistry) -> None:
    reg.register(Configured)
    clock = TestClock()
    provider = reg.create("configured", Settings(simulator={"seed": 7}), clock)  # type: ignore[arg-type]
    assert isinstance(provider, Configured)
    assert provider.seed == 7
    assert provider.clock is clock


def test_entry_points_are_loaded_and_broken_plugins_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points = [
        FakeEntryPoint("alpha", "pkg.alpha:Alpha", Alpha),
        FakeEntryPoint("broken", "pkg.broken:Thing", ImportError("no module named pkg.broken")),
        FakeEntryPoint("notaprovider", "pkg.other:thing", object),
        FakeEntryPoint("beta", "pkg.beta:Beta", Beta),
    ]
    calls: list[str] = []

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        calls.append(group)
        return points

    monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
    reg = ProviderRegistry()
    assert reg.names() == ["alpha", "beta"]
    assert calls == [ENTRY_POINT_GROUP]
    assert reg.load_errors["broken"] == "ImportError: no module named pkg.broken"
    assert "not a Provider subclass" in reg.load_errors["notaprovider"]
    # loading happens once
    reg.names()
    assert "alpha" in reg
    assert calls == [ENTRY_POINT_GROUP]
    # the reason a plug-in is missing travels with the not-found error
    with pytest.raises(NotFoundError) as info:
        reg.get("broken")
    assert info.value.context["load_error"] == "ImportError: no module named pkg.broken"


def test_explicit_registration_wins_over_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        registry_module,
        "entry_points",
        lambda *, group: [FakeEntryPoint("alpha", "pkg:Beta", Beta)],
    )
    reg = ProviderRegistry()
    reg.register(Alpha)
    assert reg.get("alpha") is Alpha


def test_without_entry_points_nothing_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*, group: str) -> list[Any]:
        raise AssertionError("entry points must not be read")

    monkeypatch.setattr(registry_module, "entry_points", explode)
    assert ProviderRegistry(load_entry_points=False).names() == []


def test_register_decorator_uses_the_default_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = ProviderRegistry(load_entry_points=False)
    monkeypatch.setattr(registry_module, "default_registry", fresh)

    @register
    class Decorated(Provider):
        name = "decorated"
        capabilities = CAPS

    assert fresh.get("decorated") is Decorated
