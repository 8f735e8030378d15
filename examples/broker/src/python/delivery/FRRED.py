"""Writes messages as files for the databolt (FRRED) pipeline.

Run as `python -m delivery.FRRED` from src/python. Like the real service it
writes into DATABOLT_SHARED_DIR (/raw_data) when that directory exists (it
is mounted in the cluster), so a directory frred cannot write is an error
here too.
"""

import json
import os
import sys

from pdmodels.models import Message
from util import config, service


def record(msg):
    """The JSON line written for one message."""
    return json.dumps({"p_uid": msg.p_uid, "timestamp": msg.timestamp, "values": msg.values}, sort_keys=True)


def main():
    service.exit_on_sigterm()
    line = record(Message(1, "2024-01-01T00:00:00Z", [{"t": 21.5}]))
    assert json.loads(line)["p_uid"] == 1
    shared = config.get("DATABOLT_SHARED_DIR")
    if os.path.isdir(shared):
        path = os.path.join(shared, f"frred-{os.getpid()}.json")
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as e:
            print(f"delivery.FRRED: cannot write {path}: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
    print(config.banner("delivery.FRRED"), flush=True)
    service.stay_up_if_asked()


if __name__ == "__main__":
    main()
