"""Shared helpers for the broker-example services."""
