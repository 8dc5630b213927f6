"""The API's web status page: sign-in, store, jobs, providers, quality and a candle chart.

Server-rendered HTML with inline SVG charts drawn from Polars frames; no script, no external
fetch. `router` is what the app includes.
"""

from quantivista.api.page.views import router

__all__ = ["router"]
