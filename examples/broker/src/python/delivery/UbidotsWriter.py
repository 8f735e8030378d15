"""Delivers logical-device messages to Ubidots (example: builds the payload only).

Run as `python -m delivery.UbidotsWriter` from src/python.
"""

from pdmodels.models import LogicalDevice, Message
from util import config, service


def to_ubidots(ld, msg):
    """Build the Ubidots request body for one message."""
    body = {}
    for value in msg.values:
        for key, v in value.items():
            body[key] = {"value": v, "context": {"device": ld.name}}
    return body


def main():
    service.exit_on_sigterm()
    # The example only builds the request body; it never sends it.
    _ = config.get("UBIDOTS_API_TOKEN")
    body = to_ubidots(LogicalDevice(10, "ld-10"), Message(1, "2024-01-01T00:00:00Z", [{"t": 21.5}]))
    assert body["t"]["value"] == 21.5
    print(config.banner("delivery.UbidotsWriter"), flush=True)
    service.stay_up_if_asked()


if __name__ == "__main__":
    main()
