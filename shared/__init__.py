"""Shared package of the notification system: every deployed function imports it."""
