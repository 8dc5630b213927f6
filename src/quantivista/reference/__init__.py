"""Reference data: instruments, identifiers, exchanges, calendars, currencies and FX."""

from quantivista.reference.calendars import TradingCalendar, get_calendar
from quantivista.reference.instruments import InstrumentMaster, ListedInstrument

__all__ = ["InstrumentMaster", "ListedInstrument", "TradingCalendar", "get_calendar"]
