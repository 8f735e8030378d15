"""How the example services start and stop in a container.

As PID 1 of a container a process that installs no SIGTERM handler ignores
SIGTERM (the kernel gives PID 1 no default action), so `kubectl` /
`docker stop` wait out the whole grace period (30 s) and then kill it.
Every example service calls `exit_on_sigterm()` first.
"""

import os
import signal
import sys

# Set (to anything but "" or "0") to keep a one-shot example service running
# after its work, as the real services do, until SIGTERM or SIGINT.
STAY_UP = "BROKER_EXAMPLE_STAY_UP"


def _exit(_signum, _frame):
    sys.exit(0)


def exit_on_sigterm():
    """Exit at once (status 0) on SIGTERM, also as PID 1."""
    signal.signal(signal.SIGTERM, _exit)


def stay_up_if_asked():
    """With BROKER_EXAMPLE_STAY_UP set, wait for a signal instead of returning."""
    if os.environ.get(STAY_UP, "") not in ("", "0"):
        while True:
            signal.pause()
