"""One `APIRouter` per resource; `serving.http.create_app` includes them in the order of `ROUTERS`."""
