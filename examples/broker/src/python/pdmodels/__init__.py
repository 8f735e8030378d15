"""Data models shared by the broker-example services."""
