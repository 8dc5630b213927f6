"""Reference data: exchanges and trading calendars."""

from quantivista.reference.calendars import TradingCalendar, get_calendar

__all__ = ["TradingCalendar", "get_calendar"]
