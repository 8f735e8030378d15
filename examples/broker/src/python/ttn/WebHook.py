"""Receives TTN v3 webhook uplinks (example).

Served in the cluster from /home/broker/python/ttn with
`uvicorn --proxy-headers --host 0.0.0.0 --port 5688 WebHook:app`.
"""

import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from util import config  # noqa: E402
from util.asgi import JsonApp  # noqa: E402

app = JsonApp("broker-example ttn webhook")


@app.route("POST", "/")
def uplink(body):
    try:
        msg = json.loads(body or b"{}")
    except ValueError:
        return 400, {"detail": "body is not JSON"}
    device = msg.get("end_device_ids", {}).get("device_id")
    if not device:
        return 400, {"detail": "end_device_ids.device_id missing"}
    return 200, {"accepted": device}


if __name__ == "__main__":
    status, _ = app.handle("POST", "/", b'{"end_device_ids": {"device_id": "d1"}}')
    assert status == 200
    print(config.banner("ttn.WebHook"), flush=True)
