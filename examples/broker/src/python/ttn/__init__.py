"""The Things Network integration: webhook receiver and message processor."""
