"""REST API over devices and mappings (example).

Served in the cluster from /home/broker/python/restapi with
`uvicorn --proxy-headers --host 0.0.0.0 --port 5687 RestAPI:app`; the probes
GET /openapi.json. `python RestAPI.py` prints the routes and exits.
"""

import os
import sys

# Run from src/python/restapi (uvicorn's working dir): make the sibling
# packages (util, pdmodels) importable even without PYTHONPATH.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from pdmodels.models import PhysicalDevice  # noqa: E402
from util import config  # noqa: E402
from util.asgi import JsonApp  # noqa: E402

app = JsonApp("broker-example restapi")

_DEVICES = [PhysicalDevice(1, "pd-1")]


@app.route("GET", "/broker/api/physical/devices/")
def list_devices(_body):
    return 200, [{"uid": d.uid, "name": d.name, "source_name": d.source_name} for d in _DEVICES]


if __name__ == "__main__":
    print(app.handle("GET", "/openapi.json")[1]["paths"])
    print(config.banner("restapi.RestAPI"), flush=True)
