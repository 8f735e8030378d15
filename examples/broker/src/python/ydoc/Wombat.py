"""Parses messages from Wombat data loggers (module path: ydoc.Wombat).

Run as `python -m ydoc.Wombat` from src/python.
"""

from ydoc.YDOC import parse
from util import config, service


def main():
    service.exit_on_sigterm()
    pd, values = parse("W7,batt=3.61")
    assert pd.source_ids["serial"] == "W7" and values["batt"] == 3.61
    print(config.banner("ydoc.Wombat"), flush=True)
    service.stay_up_if_asked()


if __name__ == "__main__":
    main()
