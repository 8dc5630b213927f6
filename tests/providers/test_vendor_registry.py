"""The vendor clients are registered by entry point and build from settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.errors import ConfigurationError
from quantivista.providers.base import AdjustmentBasis, PriceBasis
from quantivista.providers.http import HttpProvider, path_part
from quantivista.providers.registry import ProviderRegistry

VENDORS = ["alpha_vantage", "finnhub", "iex_cloud", "polygon", "stooq", "tiingo", "yahoo"]
REAL_URLS = {
    "alpha_vantage": "https://www.alphavantage.co",
    "yahoo": "https://query1.finance.yahoo.com",
    "finnhub": "https://finnhub.io",
    "iex_cloud": "https://cloud.iexapis.com",
    "polygon": "https://api.polygon.io",
    "tiingo": "https://api.tiingo.com",
    "stooq": "https://stooq.com",
}


def test_entry_points_register_every_vendor() -> None:
    registry = ProviderRegistry()
    assert set(VENDORS) <= set(registry.names())
    assert registry.load_errors == {}


@pytest.mark.parametrize("name", VENDORS)
def test_from_settings_uses_real_url_by_default_and_the_override(name: str) -> None:
    registry = ProviderRegistry()
    default = registry.create(name, Settings(), TestClock())
    assert isinstance(default, HttpProvider)
    assert default.base_url == REAL_URLS[name]
    settings = Settings(
        providers={name: {"base_url": f"http://127.0.0.1:9/{name}", "api_key": "k"}}
    )
    provider = registry.create(name, settings, TestClock())
    assert isinstance(provider, HttpProvider)
    assert provider.base_url == f"http://127.0.0.1:9/{name}" and provider.has_key
    caps = provider.capabilities
    assert caps.supports("1d") and caps.requires_key == (name not in ("yahoo", "stooq"))


def test_free_keyless_tiers_come_first_and_adjustments_are_declared() -> None:
    registry = ProviderRegistry()
    caps = {n: registry.get(n).capabilities for n in VENDORS}
    assert min(caps, key=lambda n: caps[n].priority) == "yahoo"
    assert caps["iex_cloud"].priority == max(c.priority for c in caps.values())
    assert caps["stooq"].adjustment is AdjustmentBasis.SPLITS_AND_DIVIDENDS  # the old names
    assert caps["polygon"].adjustment is AdjustmentBasis.RAW
    assert caps["finnhub"].realtime


# the basis of the bars each client returns (after its parser), daily and intraday
BASES = {
    "alpha_vantage": (PriceBasis.NONE, PriceBasis.NONE),  # DAILY raw; intraday adjusted=false
    "finnhub": (PriceBasis.SPLITS, PriceBasis.NONE),  # daily candles split-adjusted
    "iex_cloud": (PriceBasis.NONE, PriceBasis.NONE),  # uOpen..uVolume; today's minutes
    "polygon": (PriceBasis.NONE, PriceBasis.NONE),  # the client asks for adjusted=false
    "stooq": (PriceBasis.SPLITS_AND_DIVIDENDS, None),  # no intraday bars
    "tiingo": (PriceBasis.NONE, PriceBasis.NONE),  # raw columns; IEX intraday raw
    "yahoo": (PriceBasis.NONE, PriceBasis.NONE),  # the parser multiplies the splits back
}


@pytest.mark.parametrize("name", VENDORS)
def test_every_client_declares_the_basis_of_the_bars_it_returns(name: str) -> None:
    caps = ProviderRegistry().get(name).capabilities
    daily, intraday = BASES[name]
    assert caps.basis_for("1d") is daily and caps.price_basis is daily
    intraday_tf = next((tf for tf in ("1m", "5m", "1h") if caps.supports(tf)), None)
    assert (intraday_tf is None) == (intraday is None)
    if intraday_tf is not None:
        assert caps.basis_for(intraday_tf) is intraday
    assert caps.dividend_convention == "crsp"  # only Stooq adjusts for dividends: CRSP-style


def test_missing_key_is_a_configuration_error() -> None:
    from quantivista.providers.base import BarRequest
    from quantivista.providers.polygon import PolygonProvider

    with pytest.raises(ConfigurationError, match="QV_PROVIDERS__POLYGON__API_KEY"):
        PolygonProvider().fetch_bars(BarRequest.of("AAPL", "2023-01-01", "2023-01-02"))


def test_path_part_escapes_symbols() -> None:
    assert path_part("^GSPC") == "%5EGSPC"
    assert path_part("BRK.B") == "BRK.B"
    assert path_part("A/B?x") == "A%2FB%3Fx"


def test_importing_quantivista_does_not_import_websockets() -> None:
    code = "import sys, quantivista.providers.finnhub; print('websockets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
