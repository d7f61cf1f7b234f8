"""Where the plugin finds the server and how it behaves: `initializationOptions`, environment, config file.

Each setting is taken from the first of these that gives it:

1. the editor's `initializationOptions` (`{"url": ..., "token": ...}`),
2. the environment: `CODECOMP_URL`, `CODECOMP_TOKEN`, `CODECOMP_USER`,
3. a TOML file: `$CODECOMP_LSP_CONFIG`, else `$XDG_CONFIG_HOME/codecomp/lsp.toml` (`~/.config/...`),
4. the defaults below (the local server of `make serve`).

A setting of the wrong type or an unknown key is reported and ignored, never fatal: the editor keeps working.
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENVIRONMENT = {"url": "CODECOMP_URL", "token": "CODECOMP_TOKEN", "user": "CODECOMP_USER"}
KINDS: dict[str, type] = {
    "url": str, "token": str, "user": str, "request": str, "debounce_ms": float, "timeout_s": float,
    "deadline_ms": float, "retry_initial_s": float, "retry_max_s": float, "select_on_resolve": bool,
}  # fmt: skip
NULLABLE = frozenset({"token", "deadline_ms", "select_on_resolve"})


@dataclasses.dataclass(frozen=True)
class Settings:
    """The plugin's settings.

    Attributes:
        url: the completion server (`codecomp-serve`), without `/v1/...`.
        token: its bearer token (`codecomp-serve token=...`), if it has one.
        user: who types, for the server's per-user sessions and feedback.
        request: `"segments"` sends `segments.prefix/suffix/filepath`; `"document"` sends the whole
            `document` and a UTF-8 byte `cursor` (the server then has no file path for its sessions).
        debounce_ms: a request waits this long first; a newer one for the same document replaces it.
        timeout_s: a completion not answered by then is given up (the editor gets an empty list).
        deadline_ms: asked of the server (`deadline_ms`); None: the server's own objective.
        retry_initial_s, retry_max_s: after a failure the server is left alone this long, doubling up to
            the maximum while it keeps failing; requests meanwhile get empty lists at once.
        select_on_resolve: send `select` when the client resolves an item; None: only for clients that
            cannot run the item's command (VS Code resolves an item when it is highlighted, not accepted).
    """

    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    user: str = ""
    request: str = "segments"
    debounce_ms: float = 20.0
    timeout_s: float = 1.0
    deadline_ms: float | None = None
    retry_initial_s: float = 0.5
    retry_max_s: float = 5.0
    select_on_resolve: bool | None = None

    @classmethod
    def load(
        cls,
        options: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> tuple[Settings, list[str]]:
        """The settings from the three sources, and the problems found in them (for the editor's log).

        Args:
            options: the `initializationOptions` of the `initialize` request.
            environ: the environment (default: `os.environ`).
            config_file: the TOML file (default: `$CODECOMP_LSP_CONFIG` or `~/.config/codecomp/lsp.toml`).
        """
        environ = os.environ if environ is None else environ
        problems: list[str] = []
        values: dict[str, Any] = {}
        path = config_file or default_config_file(environ)
        if path.is_file():
            try:
                values.update(_checked(tomllib.loads(path.read_text()), f"config file {path}", problems))
            except (OSError, UnicodeError, tomllib.TOMLDecodeError) as error:
                problems.append(f"config file {path} is unreadable ({error}); ignored")
        values.update({name: environ[variable] for name, variable in ENVIRONMENT.items() if environ.get(variable)})
        if options is not None and not isinstance(options, Mapping):
            problems.append(f"initializationOptions should be an object, got {type(options).__name__}; ignored")
        elif options:
            values.update(_checked(options, "initializationOptions", problems))
        values.setdefault("user", _login_name())
        values["url"] = str(values.get("url", cls.url)).rstrip("/")
        if values.get("request", "segments") not in ("segments", "document"):
            problems.append(f"request must be 'segments' or 'document', not {values['request']!r}; using segments")
            values["request"] = "segments"
        return cls(**values), problems

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def default_config_file(environ: Mapping[str, str]) -> Path:
    if environ.get("CODECOMP_LSP_CONFIG"):
        return Path(environ["CODECOMP_LSP_CONFIG"])
    base = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "codecomp" / "lsp.toml"


def _checked(values: Mapping[str, Any], source: str, problems: list[str]) -> dict[str, Any]:
    """The known settings of `values` whose type is right; the others go to `problems`."""
    kept: dict[str, Any] = {}
    for name, value in values.items():
        kind = KINDS.get(name)
        if kind is None:
            problems.append(f"{source}: unknown setting {name!r} (known: {', '.join(KINDS)}); ignored")
        elif value is None and name in NULLABLE:
            kept[name] = None
        elif kind is float and isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            kept[name] = float(value)
        elif kind is not float and isinstance(value, kind):
            kept[name] = value
        else:
            problems.append(f"{source}: {name} = {value!r} is not a valid value; ignored")
    return kept


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "anonymous"
