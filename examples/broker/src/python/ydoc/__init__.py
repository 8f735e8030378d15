"""Pollers/receivers for YDOC and Wombat data loggers."""
