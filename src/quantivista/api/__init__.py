"""The Market Data API service (`qv serve`): FastAPI over the runtime's services.

Importing `quantivista` does not import this package (nor FastAPI).
"""
