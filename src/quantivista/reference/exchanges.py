"""ISO 10383 market identifier codes (MIC) of the main exchanges and their calendars."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from quantivista.errors import NotFoundError
from quantivista.reference.calendars import TradingCalendar, get_calendar

__all__ = ["EXCHANGES", "Exchange", "exchange", "exchanges_frame"]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One exchange: its operating MIC, name, country, currency, time zone and calendar."""

    mic: str
    name: str
    country: str
    currency: str
    timezone: str
    calendar: str  # exchange-calendars name (several MICs share XNYS's calendar)

    def trading_calendar(self) -> TradingCalendar:
        """Return the exchange's trading calendar."""
        return get_calendar(self.calendar)


_ROWS = [
    ("XNYS", "New York Stock Exchange", "US", "USD", "America/New_York", "XNYS"),
    ("XNAS", "Nasdaq", "US", "USD", "America/New_York", "XNYS"),
    ("ARCX", "NYSE Arca", "US", "USD", "America/New_York", "XNYS"),
    ("XASE", "NYSE American", "US", "USD", "America/New_York", "XNYS"),
    ("BATS", "Cboe BZX", "US", "USD", "America/New_York", "XNYS"),
    ("XCBF", "Cboe Futures Exchange", "US", "USD", "America/Chicago", "XCBF"),
    ("XCME", "Chicago Mercantile Exchange", "US", "USD", "America/Chicago", "CMES"),
    ("XTSE", "Toronto Stock Exchange", "CA", "CAD", "America/Toronto", "XTSE"),
    ("XLON", "London Stock Exchange", "GB", "GBP", "Europe/London", "XLON"),
    ("XPAR", "Euronext Paris", "FR", "EUR", "Europe/Paris", "XPAR"),
    ("XAMS", "Euronext Amsterdam", "NL", "EUR", "Europe/Amsterdam", "XAMS"),
    ("XETR", "Xetra", "DE", "EUR", "Europe/Berlin", "XETR"),
    ("XFRA", "Frankfurt Stock Exchange", "DE", "EUR", "Europe/Berlin", "XFRA"),
    ("XSWX", "SIX Swiss Exchange", "CH", "CHF", "Europe/Zurich", "XSWX"),
    ("XMIL", "Borsa Italiana", "IT", "EUR", "Europe/Rome", "XMIL"),
    ("XMAD", "Bolsa de Madrid", "ES", "EUR", "Europe/Madrid", "XMAD"),
    ("XSTO", "Nasdaq Stockholm", "SE", "SEK", "Europe/Stockholm", "XSTO"),
    ("XTKS", "Tokyo Stock Exchange", "JP", "JPY", "Asia/Tokyo", "XTKS"),
    ("XHKG", "Hong Kong Exchanges", "HK", "HKD", "Asia/Hong_Kong", "XHKG"),
    ("XSHG", "Shanghai Stock Exchange", "CN", "CNY", "Asia/Shanghai", "XSHG"),
    ("XKRX", "Korea Exchange", "KR", "KRW", "Asia/Seoul", "XKRX"),
    ("XBOM", "BSE India", "IN", "INR", "Asia/Kolkata", "XBOM"),
    ("XASX", "Australian Securities Exchange", "AU", "AUD", "Australia/Sydney", "XASX"),
    ("XSES", "Singapore Exchange", "SG", "SGD", "Asia/Singapore", "XSES"),
    ("BVMF", "B3 Brasil Bolsa Balcao", "BR", "BRL", "America/Sao_Paulo", "BVMF"),
    ("XJSE", "Johannesburg Stock Exchange", "ZA", "ZAR", "Africa/Johannesburg", "XJSE"),
]
EXCHANGES: dict[str, Exchange] = {row[0]: Exchange(*row) for row in _ROWS}


def exchange(mic: str) -> Exchange:
    """Return the exchange of a MIC, or raise `NotFoundError`."""
    try:
        return EXCHANGES[mic.upper()]
    except KeyError:
        raise NotFoundError(f"unknown exchange MIC {mic!r}", known=sorted(EXCHANGES)) from None


def exchanges_frame() -> pl.DataFrame:
    """Return the exchange table as a Polars frame."""
    return pl.DataFrame(
        _ROWS, schema=["mic", "name", "country", "currency", "timezone", "calendar"], orient="row"
    )
