"""Shared fakes for tests of code built on quantivista (and for our own tests)."""
