"""Stores every TTN message (example).

Runs in the cluster as a script from /home/broker/python/ttn:
`python AllMsgsWriter.py`. The directory above is put on sys.path so the
sibling packages import without PYTHONPATH.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from pdmodels.models import Message  # noqa: E402
from util import config, service  # noqa: E402


def row(msg):
    """The row the real service inserts into the messages table."""
    return (msg.p_uid, msg.timestamp, len(msg.values))


def main():
    service.exit_on_sigterm()
    assert row(Message(1, "2024-01-01T00:00:00Z", [{"t": 1}])) == (1, "2024-01-01T00:00:00Z", 1)
    print(config.banner("ttn.AllMsgsWriter"), flush=True)
    service.stay_up_if_asked()


if __name__ == "__main__":
    main()
