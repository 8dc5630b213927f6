"""Acquisition policy around provider calls: rate limits, breakers, retries, cache, router."""
