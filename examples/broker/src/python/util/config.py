"""Configuration read from the environment (env-configmap in the cluster).

Every value has a harmless default so the example services run anywhere
without environment variables, a database or a message queue.
"""

import os

DEFAULTS = {
    "PGHOST": "db",
    "PGPORT": "5432",
    "PGDATABASE": "broker",
    "RABBITMQ_HOST": "mq",
    "RABBITMQ_PORT": "5672",
    "TZ": "UTC",
    "DATABOLT_SHARED_DIR": "/raw_data",
}


def get(key, default=None):
    """Return the environment value for key, else the built-in default."""
    if key in os.environ:
        return os.environ[key]
    return DEFAULTS.get(key, default)


def banner(name):
    """The line every example service prints when it starts successfully."""
    return f"broker-example {name} ok"
