"""The HTTP API in FastAPI's full-stack-template shape: `routes/<resource>.py` (one `APIRouter`
each), `deps.py` (the caller's principal and the service), `models.py` (the request and response
shapes), and the middleware and error handlers that `serving.http.create_app` assembles."""
