"""A minimal ASGI application (stdlib only) for the example HTTP services.

The real services are FastAPI apps served by uvicorn (`uvicorn RestAPI:app`);
an object with this interface is served by uvicorn the same way.
"""

import json


class JsonApp:
    """Routes (method, path) to handlers returning (status, json-able body)."""

    def __init__(self, title):
        self.title = title
        self.routes = {}
        self.route("GET", "/openapi.json")(self._openapi)

    def route(self, method, path):
        def register(handler):
            self.routes[(method, path)] = handler
            return handler

        return register

    def _openapi(self, _body):
        paths = sorted({p for (_, p) in self.routes})
        return 200, {"openapi": "3.0.2", "info": {"title": self.title, "version": "0"}, "paths": {p: {} for p in paths}}

    def handle(self, method, path, body=b""):
        """Synchronous entry point, also used by tests."""
        handler = self.routes.get((method, path))
        if handler is None:
            return 404, {"detail": "Not Found"}
        return handler(body)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, payload = self.handle(scope["method"], scope["path"], body)
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
