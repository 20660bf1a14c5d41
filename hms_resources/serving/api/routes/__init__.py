"""One `APIRouter` per resource; `serving.http.create_app` includes them in the order of `ROUTERS`."""

from hms_resources.serving.api.routes import (
    embeddings,
    events,
    feedback,
    health,
    keys,
    memories,
    retrieval,
    sessions,
    users,
)

ROUTERS = (
    health.router, memories.router, events.router, retrieval.router, embeddings.router, feedback.router, users.router,
    sessions.router, keys.router,
)
"""In the order of the OpenAPI schema's paths."""
