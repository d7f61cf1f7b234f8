"""Administration routes: `POST /v1/admin/reload` replaces a model's checkpoint while it serves.

Under /v1, so the server's bearer token guards it like every other /v1 path (with no token set, whoever
reaches the port may reload: keep the default host, 127.0.0.1, or set a token). The work is
`dispatch/reload.py`'s; `codecomp-serve reload` (api/cli.py) calls this route, and SIGHUP does the same for
every model whose checkpoint file changed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from codecomp.serve.api.schemas import ErrorOut, error_responses
from codecomp.serve.api.server import Server
from codecomp.serve.dispatch.reload import ReloadRefused

_REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such model, or its containers are not supervised by this server"},
    409: {"model": ErrorOut, "description": "a reload of this model is under way"},
}


class ReloadBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(description="the served model's name, as in conf/serve.yaml (`char`)")
    checkpoint: str | None = Field(
        None,
        description="the checkpoint file to serve (a path on the server); none: the file it serves from, read again",
    )


class ReloadOut(BaseModel):
    model: str
    checkpoint: str = Field(description="the file it serves from now")
    version: str = Field(description="the checkpoint version served now (a hash of the file, 16 hex digits)")
    previous: str = Field(description="the version served before")
    changed: bool = Field(description="false: the file held the version already served, and nothing was done")
    seconds: float = Field(description="from the request until the old containers were gone")


def admin_router(server: Server) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/admin/reload", response_model=ReloadOut, operation_id="reload",
        responses={**error_responses(400, 422), **_REFUSALS},
    )  # fmt: skip
    async def reload(body: ReloadBody) -> Any:
        """Start the new version's containers, switch to them once every one has said hello, stop the old ones.
        A checkpoint that cannot serve (missing, damaged, another model family, other grammar versions, no
        hello in time) is refused with 422 and the old version keeps serving."""
        try:
            if server.reloader is None:
                raise ReloadRefused(404, f"no model {body.model!r} with supervised containers here")
            done = await server.reloader.reload(body.model, body.checkpoint)
        except ReloadRefused as refused:
            return JSONResponse({"error": str(refused)}, status_code=refused.status)
        return ReloadOut(model=done.model, checkpoint=done.checkpoint, version=done.version, previous=done.previous,
                         changed=done.changed, seconds=done.seconds)  # fmt: skip

    return router
