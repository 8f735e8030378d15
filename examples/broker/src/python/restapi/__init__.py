"""The broker's REST API."""
