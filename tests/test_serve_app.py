"""The HTTP API (Tabby-compatible) over a server with in-process containers: answers, bad input, feedback,
auth, health, metrics, and the configuration file."""

import asyncio

import pytest

from codecomp.serve.api.config import ModelConfig, OptionsConfig, ServerConfig
from codecomp.serve.protocol import Options
from codecomp.serve.service.completion import ServiceConfig
from codecomp.serve.service.feedback import FeedbackStore
from tests.serve_fakes import body, config, running


def test_completion_round_trip_with_tabby_fields(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as run:
            response = await run.client.post("/v1/completions", json=body())
            return response.status_code, response.json()

    status, answer = asyncio.run(scenario())
    assert status == 200
    assert answer["id"].startswith("cmpl-")
    assert [(c["index"], c["text"]) for c in answer["choices"]] == [(0, "etupmoc!"), (1, "second")]
    assert answer["models"] == {"echo": "ok"} and answer["cache"] == {"echo": "miss"}
    assert answer["degraded"] is False and answer["choices"][0]["model"] == "echo"


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"language": "javascript", "segments": {"prefix": "\xff\xfe"}}', 400, "not valid JSON"),
        (b'{"language": "javascript", "segments": {"prefix": "\\ud800"}}', 400, "not valid UTF-8"),
        (b'{"language": "javascript", "segments": {"prefix": 12}}', 422, "invalid request"),
        (b'{"language": 5, "segments": {"prefix": "x"}}', 422, "invalid request"),
        (b'{"language": "javascript", "segments": {"prefix": "x", "git_url": "\\ud800"}}', 400, "user or filepath"),
        (b'{"language": "javascript"}', 422, "segments.prefix"),
        (b'{"language": "javascript", "document": "ab", "cursor": 3}', 422, "outside the document"),
        (b'{"language": "javascript", "document": "\xc3\xa9", "cursor": 1}', 400, "inside a character"),
        (b'{"language": "javascript", "document": "ab", "cursor": true}', 422, "invalid request"),
        (b'{"language": "javascript", "segments": {"prefix": "x"}, "user": "\\udc80"}', 400, "user or filepath"),
        (b'{"language": "javascript", "segments": {"prefix": "' + b"x" * 30_000 + b'"}}', 413, "too large"),
    ],
)
def test_bad_input_gets_a_clear_4xx(tmp_path, payload, status, message):
    async def scenario():
        async with running(config(tmp_path)) as run:
            response = await run.client.post(
                "/v1/completions", content=payload, headers={"content-type": "application/json"}
            )
            healthy = await run.client.get("/v1/health")
            return response, healthy.status_code

    response, healthy = asyncio.run(scenario())
    assert response.status_code == status and message in response.text
    assert "error" in response.json() and healthy == 200  # and the server is still up


def test_an_oversized_body_without_a_length_is_refused_as_it_streams(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as run:

            async def chunks():
                yield b'{"language": "javascript", "segments": {"prefix": "'
                for _ in range(30):
                    yield b"x" * 1000
                yield b'"}}'

            return await run.client.post("/v1/completions", content=chunks())

    response = asyncio.run(scenario())
    assert "content-length" not in response.request.headers  # sent chunked
    assert response.status_code == 413 and "too large" in response.json()["error"]


def test_document_and_cursor_form_and_language_aliases(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as run:
            document = "é = call_me\nnext"
            cursor = len("é = call_me".encode())
            payload = {"language": "javascriptreact", "document": document, "cursor": cursor}
            return (await run.client.post("/v1/completions", json=payload)).json()

    assert asyncio.run(scenario())["choices"][0]["text"] == "em_llac!"


def test_feedback_events_are_stored_durably(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as run:
            completion = (await run.client.post("/v1/completions", json=body(user="grace"))).json()
            ok = await run.client.post("/v1/events", json={"type": "select", "completion_id": completion["id"],
                                                       "choice_index": 1})  # fmt: skip
            unknown = await run.client.post(
                "/v1/events", json={"type": "view", "completion_id": "cmpl-x", "choice_index": 0}
            )
            past = await run.client.post("/v1/events", json={"type": "view", "completion_id": completion["id"],
                                                         "choice_index": 9})  # fmt: skip
            wrong = await run.client.post("/v1/events", json={"type": "like", "completion_id": completion["id"],
                                                          "choice_index": 0})  # fmt: skip
            return ok.status_code, (unknown.status_code, unknown.json()["known"]), past.status_code, wrong.status_code

    # An event for a completion the server does not remember is stored and acknowledged, as Tabby does.
    assert asyncio.run(scenario()) == (200, (200, False), 422, 422)
    reopened = FeedbackStore(tmp_path / "feedback.sqlite")  # the server is gone; the events are not
    selected, forgotten = reopened.events()
    assert (selected.type, selected.choice_index, selected.user, selected.model, selected.text) == (
        "select", 1, "grace", "echo", "second")  # fmt: skip
    assert (forgotten.type, forgotten.completion_id, forgotten.user, forgotten.model) == ("view", "cmpl-x", "", "")


def test_bearer_token_guards_the_api_health_included(tmp_path):
    async def scenario():
        async with running(config(tmp_path), token="s3cret") as run:
            without = await run.client.post("/v1/completions", json=body())
            wrong = await run.client.post("/v1/completions", json=body(), headers={"Authorization": "Bearer nope"})
            right = await run.client.post("/v1/completions", json=body(), headers={"Authorization": "Bearer s3cret"})
            # health too: a client with a wrong token must not show "ready" and then get nothing
            health = await run.client.get("/v1/health", headers={"Authorization": "Bearer nope"})
            health_ok = await run.client.get("/v1/health", headers={"Authorization": "Bearer s3cret"})
            # an unauthenticated caller learns nothing about the body: no 422 details, no 400 for bad JSON
            invalid = await run.client.post("/v1/completions", json={"language": 3})
            json_type = {"Content-Type": "application/json"}
            malformed = await run.client.post("/v1/completions", content=b"{", headers=json_type)
            event = await run.client.post("/v1/events", json={})
            return (without.status_code, wrong.status_code, right.status_code, health.status_code,
                    health_ok.status_code, invalid.status_code, malformed.status_code, event.status_code)  # fmt: skip

    assert asyncio.run(scenario()) == (401, 401, 200, 401, 200, 401, 401, 401)


def test_health_models_metrics_and_openapi(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as run:
            await run.client.post("/v1/completions", json=body())
            await run.client.post("/v1/completions", json=body())
            return [await run.client.get(path) for path in ("/v1/health", "/v1/models", "/metrics", "/openapi.json")]

    health, models, metrics, openapi = asyncio.run(scenario())
    assert health.json()["status"] == "ok" and health.json()["models"]["echo"]["replicas"] == 1
    assert models.json()["models"][0]["name"] == "echo"
    text = metrics.text
    assert "codecomp_request_latency_seconds_count 2.0" in text
    assert 'codecomp_cache_total{model="echo",result="hit"} 1.0' in text
    assert 'codecomp_batch_size_count{model="echo"} 1.0' in text
    assert "/v1/completions" in openapi.json()["paths"]


def test_conf_serve_yaml_sets_every_setting():
    """Every setting can be found in conf/serve.yaml, and the yaml composes to the typed ServerConfig."""
    import dataclasses as dc
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from codecomp import CONFIG_DIR
    from codecomp.serve.api.config import register_schema
    from codecomp.serve.dispatch.dispatcher import BatchingConfig

    # The schema fills in what the yaml leaves out, so the file itself is read to see what it names.
    raw = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "serve.yaml"))
    del raw["hydra"], raw["defaults"]
    names = lambda cls: {f.name for f in dc.fields(cls)}  # noqa: E731
    assert set(raw) == names(ServerConfig)
    assert set(raw["service"]) == names(ServiceConfig)
    for model in raw["models"].values():
        assert set(model) == names(ModelConfig)
        assert set(model["batching"]) == names(BatchingConfig) and set(model["options"]) == names(OptionsConfig)
    assert names(OptionsConfig) == set(Options.__struct_fields__)  # the server converts one to the other
    register_schema()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = OmegaConf.to_object(compose(config_name="serve"))
    assert isinstance(config, ServerConfig) and isinstance(config.models["char"].options, OptionsConfig)
    assert config.models["tree"].trigger == "token" and config.service.objective_ms == 50
