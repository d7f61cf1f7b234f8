"""The completion API's request and response bodies, its error bodies, and what the OpenAPI document adds.

The document is the API's contract (`/openapi.json`, `/docs`): every status the server can answer is in it
with its real body, and the bearer scheme when a token is set. tests/test_serve_openapi.py holds the server
to it with a schema fuzzer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


# Strict: JSON's true is not the number 1, nor 5 the string "5", as the document says.
class Segments(BaseModel, strict=True):
    """Tabby's segments; its other fields (declarations, snippets, clipboard) are accepted and not used."""

    prefix: str = Field("", description="the text before the cursor")
    suffix: str | None = Field(None, description="the text after the cursor (null: none)")
    filepath: str | None = Field(None, description="the file's path: keeps each file's editing session apart")
    git_url: str | None = Field(None, description="the repository's remote: with `filepath`, names the file")


class CompletionBody(BaseModel):
    # Tabby clients send more (temperature, seed, mode, ...). Either segments or the document and cursor.
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra={"anyOf": [
        {"required": ["segments"], "properties": {"segments": {"type": "object"}}},
        {"required": ["document", "cursor"],
         "properties": {"document": {"type": "string"}, "cursor": {"type": "integer"}}},
    ]})  # fmt: skip

    language: str | None = None  # its description lists the served languages: see `document`
    segments: Segments | None = None
    document: str | None = Field(None, description="instead of segments: the whole document ...")
    cursor: int | None = Field(None, description="... and the cursor, a UTF-8 byte offset into it")
    user: str | None = Field(None, description="who is typing: selection learns per user; sessions are kept apart")
    deadline_ms: float | None = Field(None, gt=0, description="answer within this (at most the objective)")


class ChoiceOut(BaseModel):
    index: int
    text: str = Field(description="to insert at the cursor; never repeats the text after it on its line")
    score: float = Field(description="natural-log probability under its model")
    model: str
    version: str = Field(
        description="the model at the checkpoint version that answered: `char@` and the first 8 hex digits of the "
        "version `/v1/models` shows (a reload changes it)"
    )


class CompletionOut(BaseModel):
    id: str
    choices: list[ChoiceOut]
    models: dict[str, str] = Field(description="per model asked: ok, late, expired, shed or error")
    cache: dict[str, str] = Field(description="per model that answered: hit, shared, typed, approx or miss")
    versions: dict[str, str] = Field(
        description="per model that answered, the checkpoint version that did, as each choice's `version` names it"
    )
    degraded: bool
    light: bool
    latency_ms: float
    language: str | None = Field(description="the served language whose models answered (null: none did)")
    reason: str | None = Field(description="why no model was asked (a language no model serves), else null")


class ErrorOut(BaseModel):
    error: str


class Problem(BaseModel):
    field: str
    problem: str


class InvalidOut(BaseModel):
    """422: a body of the wrong shape (with `detail`, per field), or one whose values do not fit together."""

    error: str
    detail: list[Problem] | None = None


_ERRORS: dict[int, tuple[type[BaseModel], str]] = {
    400: (ErrorOut, "the body is not valid JSON, or its text is not valid UTF-8"),
    401: (ErrorOut, "a token is set and the request lacks `Authorization: Bearer <token>` (scheme in any case)"),
    408: (ErrorOut, "the body did not arrive whole in `body_timeout_s`; the connection is closed"),
    413: (ErrorOut, "the body is over `max_body_bytes`, or its Content-Length is not a number"),
    422: (InvalidOut, "the body is of the wrong shape, or its values do not fit (a cursor outside the document)"),
    503: (ErrorOut, "overloaded, or the feedback store unavailable: retry after the seconds in Retry-After"),
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for these error statuses, each with its body."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": _ERRORS[status][0], "description": _ERRORS[status][1]} for status in statuses
    }
    if 503 in statuses:
        responses[503]["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}
    return responses


def complete_document(document: dict[str, Any], languages_text: str, token: bool) -> dict[str, Any]:
    """What FastAPI cannot know: the served languages, the middleware's answers (408 and 413 on every
    operation, 401 on every /v1 one when a token is set) and the bearer scheme."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    language = schemas["CompletionBody"]["properties"]["language"]
    language["description"] = languages_text
    for model in (ErrorOut, InvalidOut, Problem):
        schemas.setdefault(model.__name__, _component(model))
    if token:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "`token` of conf/serve.yaml"}
        }
    for path, operations in document["paths"].items():
        for operation in operations.values():
            statuses = (401, 408, 413) if token and path.startswith("/v1/") else (408, 413)
            for status in statuses:
                operation["responses"].setdefault(str(status), _reference(status))
            if token and path.startswith("/v1/"):
                operation["security"] = [{"bearer": []}]
    return document


def _component(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # Problem is a component of its own
    return schema


def _reference(status: int) -> dict[str, Any]:
    model, description = _ERRORS[status]
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}
