"""ISO 4217 currencies with their minor-unit decimals."""

from __future__ import annotations

from dataclasses import dataclass

from quantivista.errors import NotFoundError

__all__ = ["CURRENCIES", "Currency", "currency", "is_currency"]


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency: alphabetic code, numeric code, minor-unit decimals, name."""

    code: str
    numeric: str
    decimals: int
    name: str


_ROWS = [
    ("USD", "840", 2, "US Dollar"), ("EUR", "978", 2, "Euro"),
    ("GBP", "826", 2, "Pound Sterling"), ("JPY", "392", 0, "Yen"),
    ("CHF", "756", 2, "Swiss Franc"), ("CAD", "124", 2, "Canadian Dollar"),
    ("AUD", "036", 2, "Australian Dollar"), ("NZD", "554", 2, "New Zealand Dollar"),
    ("SEK", "752", 2, "Swedish Krona"), ("NOK", "578", 2, "Norwegian Krone"),
    ("DKK", "208", 2, "Danish Krone"), ("HKD", "344", 2, "Hong Kong Dollar"),
    ("SGD", "702", 2, "Singapore Dollar"), ("CNY", "156", 2, "Yuan Renminbi"),
    ("KRW", "410", 0, "Won"), ("INR", "356", 2, "Indian Rupee"),
    ("BRL", "986", 2, "Brazilian Real"), ("MXN", "484", 2, "Mexican Peso"),
    ("ZAR", "710", 2, "Rand"), ("TRY", "949", 2, "Turkish Lira"),
    ("PLN", "985", 2, "Zloty"), ("CZK", "203", 2, "Czech Koruna"),
    ("HUF", "348", 2, "Forint"), ("ILS", "376", 2, "New Israeli Sheqel"),
    ("SAR", "682", 2, "Saudi Riyal"), ("AED", "784", 2, "UAE Dirham"),
    ("TWD", "901", 2, "New Taiwan Dollar"), ("THB", "764", 2, "Baht"),
    ("IDR", "360", 2, "Rupiah"), ("MYR", "458", 2, "Malaysian Ringgit"),
    ("KWD", "414", 3, "Kuwaiti Dinar"), ("BHD", "048", 3, "Bahraini Dinar"),
    ("CLP", "152", 0, "Chilean Peso"), ("RUB", "643", 2, "Russian Ruble"),
    ("XAU", "959", -1, "Gold (troy ounce)"), ("XAG", "961", -1, "Silver (troy ounce)"),
]  # fmt: skip
CURRENCIES: dict[str, Currency] = {row[0]: Currency(*row) for row in _ROWS}


def is_currency(code: str) -> bool:
    """Return whether `code` is a known ISO 4217 alphabetic code."""
    return code.upper() in CURRENCIES


def currency(code: str) -> Currency:
    """Return the currency of an ISO 4217 code, or raise `NotFoundError`."""
    try:
        return CURRENCIES[code.upper()]
    except KeyError:
        raise NotFoundError(f"unknown ISO 4217 currency {code!r}") from None
