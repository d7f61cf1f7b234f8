"""The HTTP client of `codecomp-serve`: completions and feedback events, never raising, never piling up.

When the server is down, slow, or refuses the token, a completion gives None (the editor shows nothing),
the user is told once what is wrong and how to fix it, and the server is left alone for a while (0.5 s,
doubling up to `retry_max_s`) so fast typing costs nothing while it is away; the first request after
that tries again, so the plugin reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from codecomp.serve.lsp.config import Settings, default_config_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    index: int  # its index in the server's answer (what feedback events refer to)
    text: str  # what to insert at the cursor
    model: str


@dataclass(frozen=True)
class Completion:
    id: str
    choices: list[Choice]
    latency_ms: float | None  # the server's own latency, as it reports it


class CompletionClient:
    """`POST /v1/completions` and `POST /v1/events` of one server.

    Args:
        settings: where the server is, its token, the timeout and the back-off.
        notify: tells the user something is wrong (`window/showMessage`); called once per kind of problem
            until the server answers again.
        note: writes a line to the editor's log (`window/logMessage`).
    """

    def __init__(self, settings: Settings, notify: Callable[[str], None], note: Callable[[str], None]) -> None:
        self.settings, self._notify, self._note = settings, notify, note
        self._http = httpx.AsyncClient(base_url=settings.url, headers=settings.headers, timeout=settings.timeout_s)
        self._problem: str | None = None  # the kind of problem the user was told about, until it is solved
        self._backoff_s = 0.0
        self._retry_at = 0.0  # time.monotonic() before which the server is left alone
        self._told: set[int] = set()  # statuses refusing one request (a file too large, ...) the user was told of

    @property
    def resting(self) -> bool:
        """True while the server is left alone after a failure."""
        return time.monotonic() < self._retry_at

    async def complete(self, body: dict[str, Any]) -> Completion | None:
        """The server's answer to a completion request, or None (down, slow, refused, resting, bad answer)."""
        if self.resting:
            return None
        try:
            async with asyncio.timeout(self.settings.timeout_s):  # all of it: connect, send, wait, read
                response = await self._http.post("/v1/completions", json=body)
        except (TimeoutError, httpx.TimeoutException):
            self._failed("slow", self._slow_message())
            return None
        except httpx.HTTPError as error:
            self._failed("down", self._down_message(error))
            return None
        if response.status_code in (401, 403):
            self._failed("token", self._token_message(response.status_code))
            return None
        if response.status_code == 503:  # shedding load: quiet, and a short rest as it asks
            self._rest(min(_retry_after(response), self.settings.retry_max_s))
            return None
        if response.status_code in (400, 413, 422):  # this request, not the server: no rest, told once per status
            if response.status_code not in self._told:
                self._told.add(response.status_code)
                self._notify(self._refused_message(response))
            return None
        if response.status_code >= 400:
            self._failed(f"http {response.status_code}", self._refused_message(response))
            return None
        try:
            answer = response.json()
            choices = [Choice(int(c["index"]), str(c["text"]), str(c.get("model", ""))) for c in answer["choices"]]
            completion = Completion(str(answer["id"]), choices, _number(answer.get("latency_ms")))
        except (ValueError, KeyError, TypeError) as error:
            self._failed("answer", f"codecomp: {self.settings.url} does not answer like codecomp-serve ({error!r}).")
            return None
        self._recovered()
        log.debug("completion %s: %d choices, models %s, %.1f ms at the server", completion.id,
                  len(choices), answer.get("models"), completion.latency_ms or 0.0)  # fmt: skip
        return completion

    async def send_event(self, kind: str, completion_id: str, choice_index: int) -> bool:
        """`POST /v1/events {type, completion_id, choice_index}`; False if it did not arrive (quietly)."""
        if self.resting:
            return False
        event = {"type": kind, "completion_id": completion_id, "choice_index": choice_index}
        try:
            response = await self._http.post("/v1/events", json=event)
        except httpx.HTTPError as error:
            log.debug("event %s not sent: %r", event, error)
            return False
        if response.status_code != 200:  # e.g. 404: the server restarted and forgot the completion
            log.debug("event %s refused: %s %s", event, response.status_code, response.text[:200])
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()

    def _failed(self, problem: str, message: str) -> None:
        self._backoff_s = min(max(self.settings.retry_initial_s, 2 * self._backoff_s), self.settings.retry_max_s)
        self._rest(self._backoff_s)
        if problem != self._problem:
            self._problem = problem
            self._notify(message)
        log.info("%s; next try in %.1f s", message, self._backoff_s)

    def _rest(self, seconds: float) -> None:
        self._retry_at = time.monotonic() + seconds

    def _recovered(self) -> None:
        if self._problem is not None:
            self._note(f"codecomp: the completion server at {self.settings.url} answers again")
        self._problem, self._backoff_s = None, 0.0

    def _where_to_set(self, name: str) -> str:
        variable = {"url": "CODECOMP_URL", "token": "CODECOMP_TOKEN"}[name]
        return f"initializationOptions.{name}, ${variable} or {default_config_file(os.environ)}"

    def _down_message(self, error: Exception) -> str:
        return (
            f"codecomp: cannot reach the completion server at {self.settings.url} ({error or type(error).__name__})."
            f" Start it (`codecomp-serve`, or `make serve`), or set its URL in {self._where_to_set('url')}."
            " Completions come back by themselves once it answers."
        )

    def _slow_message(self) -> str:
        return (
            f"codecomp: the completion server at {self.settings.url} did not answer within"
            f" {self.settings.timeout_s:g} s: it may be starting or overloaded. Completions are empty until it"
            " answers in time; raise `timeout_s` in the plugin's settings if it is just slow."
        )

    def _token_message(self, status: int) -> str:
        given = "refused the token" if self.settings.token else "wants a token"
        return (
            f"codecomp: the completion server at {self.settings.url} {given} (HTTP {status}). Set the token it"
            f" was started with (`codecomp-serve token=...`) in {self._where_to_set('token')}, then restart"
            " the language server."
        )

    def _refused_message(self, response: httpx.Response) -> str:
        return (
            f"codecomp: the completion server at {self.settings.url} answered HTTP {response.status_code}"
            f" ({response.text[:200]}). See its log; completions are empty meanwhile."
        )


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
