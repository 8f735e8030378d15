"""Parses messages from YDOC data loggers.

Run as `python -m ydoc.YDOC` from src/python.
"""

from pdmodels.models import PhysicalDevice
from util import config, service


def parse(line):
    """Parse 'serial,channel=value,...' into a device and its values."""
    serial, _, rest = line.partition(",")
    values = {}
    for item in filter(None, rest.split(",")):
        key, _, val = item.partition("=")
        values[key] = float(val)
    return PhysicalDevice(0, serial, "ydoc", {"serial": serial}), values


def main():
    service.exit_on_sigterm()
    pd, values = parse("Y123,ch1=1.5,ch2=2")
    assert pd.name == "Y123" and values["ch2"] == 2.0
    print(config.banner("ydoc.YDOC"), flush=True)
    service.stay_up_if_asked()


if __name__ == "__main__":
    main()
