"""Helpers the tests share: processes, waiting on conditions, events."""
