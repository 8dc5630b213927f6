"""Providers by name: built-ins, user registrations and `quantivista.providers` entry points."""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from quantivista.errors import NotFoundError
from quantivista.providers.base import Provider

if TYPE_CHECKING:
    from quantivista.clock import Clock
    from quantivista.config import Settings

__all__ = ["ENTRY_POINT_GROUP", "ProviderRegistry", "default_registry", "register"]

ENTRY_POINT_GROUP = "quantivista.providers"


class ProviderRegistry:
    """Maps provider names to provider classes; plug-ins that fail to load are reported."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self._classes: dict[str, type[Provider]] = {}
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._lock = threading.Lock()
        self.load_errors: dict[str, str] = {}

    def register(
        self, cls: type[Provider], *, name: str | None = None, replace: bool = False
    ) -> type[Provider]:
        """Register a provider class under `name` (default: `cls.name`)."""
        key = (name or cls.name).lower()
        if not key:
            raise ValueError(f"{cls.__name__} has no provider name")
        if not replace and key in self._classes and self._classes[key] is not cls:
            raise ValueError(f"a provider named {key!r} is already registered")
        self._classes[key] = cls
        return cls

    def _ensure_loaded(self) -> None:
        if self._loaded or not self._load_entry_points:
            return
        with self._lock:
            if self._loaded:
                return
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name.lower() in self._classes:
                    continue
                try:
                    cls = ep.load()
                    if not (isinstance(cls, type) and issubclass(cls, Provider)):
                        raise TypeError(f"{ep.value} is not a Provider subclass")
                    self._classes[ep.name.lower()] = cls
                except Exception as exc:  # a broken plug-in must not take the platform down
                    self.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
            self._loaded = True

    def names(self) -> list[str]:
        """Return the registered provider names, sorted."""
        self._ensure_loaded()
        return sorted(self._classes)

    def get(self, name: str) -> type[Provider]:
        """Return the provider class registered as `name`."""
        self._ensure_loaded()
        try:
            return self._classes[name.lower()]
        except KeyError:
            raise NotFoundError(
                "unknown provider",
                provider=name,
                known=", ".join(sorted(self._classes)),
                load_error=self.load_errors.get(name),
            ) from None

    def create(self, name: str, settings: Settings, clock: Clock) -> Provider:
        """Build the provider `name` from settings."""
        return self.get(name).from_settings(settings, clock)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and name.lower() in self._classes


default_registry = ProviderRegistry()


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: register a provider in the default registry under `cls.name`."""
    return default_registry.register(cls)
