"""Delivery of logical-device messages to downstream platforms."""
