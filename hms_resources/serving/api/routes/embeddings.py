"""`/v1/embeddings`: OpenAI's embeddings API over the service's embedder (`serving.embeddings`), run in
the retrieval threads (`deps.retrieving`), as a search is."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from hms_resources.serving.api.bodies import StrictJsonRoute
from hms_resources.serving.api.deps import Caller, Service, retrieving
from hms_resources.serving.api.models import ERRORS, EmbeddingsIn, EmbeddingsOut
from hms_resources.serving.api.responses import JsonResponse
from hms_resources.serving.embeddings import MAX_INPUT_BYTES, MAX_INPUTS, embeddings

router = APIRouter(prefix="/v1/embeddings", tags=["retrieval"], route_class=StrictJsonRoute)

TOO_MANY = {413: {**ERRORS[413], "description": f"`too_large`: over {MAX_INPUTS} texts, or a text over {MAX_INPUT_BYTES} bytes; `field` names it"}}


@router.post("", response_model=EmbeddingsOut, responses={**ERRORS, **TOO_MANY})
async def embed(request: Request, service: Service, caller: Caller, body: EmbeddingsIn) -> Response:
    embedder = service.assembler.embedder
    found = await retrieving(
        request,
        lambda: embeddings(embedder, caller, body.input, body.model, encoding_format=body.encoding_format, dimensions=body.dimensions),
    )
    return JsonResponse(found)
