"""The app uvicorn's workers build: settings from the environment (`qv serve` sets them)."""

from __future__ import annotations

from fastapi import FastAPI

from quantivista.api.app import create_app
from quantivista.config import Settings

__all__ = ["create"]


def create() -> FastAPI:
    """Build the API app from `Settings()` (QV_* variables, qv.toml)."""
    return create_app(Settings())
