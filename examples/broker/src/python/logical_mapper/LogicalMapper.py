"""Logical mapper: forwards physical-device messages to their logical device.

Run as `python -m logical_mapper.LogicalMapper` from src/python.
"""

from pdmodels.models import LogicalDevice, Mapping, Message, PhysicalDevice
from util import config, service


def map_message(mapping, msg):
    """Return the message re-addressed to the mapping's logical device."""
    if msg.p_uid != mapping.pd.uid:
        return None
    return {"l_uid": mapping.ld.uid, "timestamp": msg.timestamp, "values": msg.values}


def main():
    service.exit_on_sigterm()
    mapping = Mapping(PhysicalDevice(1, "pd-1"), LogicalDevice(10, "ld-10"))
    mapped = map_message(mapping, Message(1, "2024-01-01T00:00:00Z", [{"t": 21.5}]))
    assert mapped is not None and mapped["l_uid"] == 10
    print(config.banner("logical_mapper.LogicalMapper"), flush=True)
    service.stay_up_if_asked()


if __name__ == "__main__":
    main()
