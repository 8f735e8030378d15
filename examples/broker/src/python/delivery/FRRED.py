"""Writes messages as files for the databolt (FRRED) pipeline.

Run as `python -m delivery.FRRED` from src/python. The real service writes to
DATABOLT_SHARED_DIR (/raw_data); the example only formats the record.
"""

import json

from pdmodels.models import Message
from util import config


def record(msg):
    """The JSON line written for one message."""
    return json.dumps({"p_uid": msg.p_uid, "timestamp": msg.timestamp, "values": msg.values}, sort_keys=True)


def main():
    line = record(Message(1, "2024-01-01T00:00:00Z", [{"t": 21.5}]))
    assert json.loads(line)["p_uid"] == 1
    _ = config.get("DATABOLT_SHARED_DIR")
    print(config.banner("delivery.FRRED"), flush=True)


if __name__ == "__main__":
    main()
