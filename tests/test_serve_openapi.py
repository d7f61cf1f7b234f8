"""The OpenAPI document is the API's contract: its content, and a schema fuzzer (schemathesis) that finds no
5xx and no answer that differs from it, against the ASGI app with in-process fake containers."""

import asyncio
import collections
import contextlib
import dataclasses

import schemathesis
import schemathesis.engine
from schemathesis.engine import Status
from schemathesis.engine.events import FatalError, NonFatalError, ScenarioFinished
from schemathesis.python import asgi

from tests.serve_fakes import config, running, serving

TOKEN = "s3cret"
EXAMPLES = 50  # per operation, phase and generation mode: about 600 requests, 15-20 s


class FakeBacked:
    """The app of a server with fake containers, started by the ASGI lifespan on the event loop that serves
    it (schemathesis runs an ASGI app on an event loop of its own, in a thread)."""

    def __init__(self, cfg, token) -> None:
        self.cfg, self.token, self.app = cfg, token, None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        async with contextlib.AsyncExitStack() as stack:
            await receive()  # lifespan.startup
            self.app = (await stack.enter_async_context(serving(self.cfg, token=self.token))).app
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def test_the_server_keeps_to_its_document(tmp_path):
    """schemathesis's whole run, as its CLI does it (examples, coverage, fuzzing and stateful phases, every
    check): no 5xx, every status and content type documented, bodies and headers as documented, input that
    breaks the schema refused, the bearer scheme enforced, 405 for undocumented methods."""
    cfg = dataclasses.replace(config(tmp_path), heartbeat_timeout_s=30.0)  # the fuzzer's thread may hog the GIL
    schema = schemathesis.openapi.from_asgi("/openapi.json", FakeBacked(cfg, TOKEN))
    schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"})
    for phase in (schema.config.generation, schema.config.phases.fuzzing.generation,
                  schema.config.phases.stateful.generation):  # fmt: skip
        phase.update(modes=["positive", "negative"], max_examples=EXAMPLES, deterministic=True)
    # Input the schema cannot rule out (a cursor past the document's end, a lone surrogate) gets the 400 or
    # 422 the document gives it; status_code_conformance still holds every status to the document.
    schema.config.checks.positive_data_acceptance.expected_statuses += ["400", "422"]
    failures, errors, statuses = [], [], collections.Counter()
    try:
        for event in schemathesis.engine.from_schema(schema).execute():
            if isinstance(event, ScenarioFinished):
                recorder = event.recorder
                statuses.update(i.response.status_code for i in recorder.interactions.values() if i.response)
                for check in (check for checks in recorder.checks.values() for check in checks):
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        info = check.failure_info
                        failures.append(f"{event.label}: {check.name}: {info.failure.title}\n{info.code_sample}")
            elif isinstance(event, (NonFatalError, FatalError)):
                errors.append(f"{getattr(event, 'label', '')}: {event.value!r}")
    finally:
        asgi.shutdown_lifespans()
    summary = f"{sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}"
    print(summary)  # the run's summary, for `pytest -s`
    assert not errors, errors
    assert not sorted(set(failures)), f"{summary}; " + "; ".join(sorted(set(failures)))
    assert max(statuses) < 500
    assert {200, 401, 405, 422} <= set(statuses)  # it did reach past the token and the validation


def test_the_document_says_what_the_server_answers(tmp_path):
    async def scenario():
        async with running(config(tmp_path), token=TOKEN) as run:
            return (await run.client.get("/openapi.json")).json()

    document = asyncio.run(scenario())
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "`token` of conf/serve.yaml"
    }  # fmt: skip
    statuses = {
        (path, method): set(operation["responses"])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert statuses[("/v1/completions", "post")] == {"200", "400", "401", "408", "413", "422", "503"}
    assert statuses[("/v1/events", "post")] >= {"200", "400", "401", "408", "413", "422"}
    assert statuses[("/v1/health", "get")] == statuses[("/v1/health", "post")] == {"200", "401", "408", "413"}
    assert "401" not in statuses[("/metrics", "get")]  # open to scrapers
    for (path, method), _ in statuses.items():
        security = document["paths"][path][method].get("security")
        assert security == ([{"bearer": []}] if path.startswith("/v1/") else None)
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    invalid = document["paths"]["/v1/completions"]["post"]["responses"]["422"]["content"]["application/json"]
    assert invalid["schema"] == {"$ref": "#/components/schemas/InvalidOut"}
    assert "Retry-After" in document["paths"]["/v1/completions"]["post"]["responses"]["503"]["headers"]
    language = document["components"]["schemas"]["CompletionBody"]["properties"]["language"]["description"]
    assert "Served: cpp, javascript" in language and "typescript -> javascript" in language and "c -> cpp" in language
    assert "404" in document["info"]["description"]


def test_without_a_token_no_scheme_is_declared(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as run:
            return (await run.client.get("/openapi.json")).json()

    document = asyncio.run(scenario())
    assert "securitySchemes" not in document["components"]
    assert all("401" not in op["responses"] for ops in document["paths"].values() for op in ops.values())
