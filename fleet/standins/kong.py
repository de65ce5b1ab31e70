"""Stand-in for Kong 2.8.1 in DB-less mode, the `kong` gateway of a Supabase instance.

Started as ``python kong.py``. It does what the compose template's entrypoint does before Kong
starts: read the mounted template (KONG_DECLARATIVE_CONFIG_TEMPLATE, default
/home/kong/temp.yml), expand it as ``eval "echo \\"$(cat ~/temp.yml)\\""`` would, write the result
to KONG_DECLARATIVE_CONFIG when that path is writable, then load it as Kong's declarative config.
Other environment read: KONG_PROXY_LISTEN (default "0.0.0.0:8000, 0.0.0.0:8443 ssl"),
KONG_PLUGINS, KONG_SSL_CERT / KONG_SSL_CERT_KEY, KONG_DATABASE (must be "off"), KONG_LOG_LEVEL
(default notice) and Kong's DNS settings (KONG_DNS_RESOLVER, KONG_DNS_ORDER, KONG_DNS_VALID_TTL,
KONG_DNS_STALE_TTL, KONG_DNS_NOT_FOUND_TTL, KONG_DNS_ERROR_TTL, KONG_DNS_NO_SYNC,
KONG_DNS_HOSTSFILE; see kongdns.py). Two knobs exist only in the stand-in: KONG_UPSTREAM_TIMEOUT
(seconds, default 10, used where a service sets no connect/read/write timeout; Kong's own
default is 60) and KONG_STANDIN_STRICT_UNIQUENESS (when true, duplicated service/route/consumer
names are rejected as Kong >= 3.4 does; Kong 2.8 accepts them and the last definition wins,
which is the default here).

TLS on the ssl listener uses a self-signed certificate made at start with the `cryptography`
package when importable, else with the `openssl` command; if neither works the listener speaks
plain HTTP and says so on stderr.

Public contract kept: routing by longest path prefix with strip_path and Kong's path joining,
the plugins key-auth, basic-auth, acl, cors and request-transformer with their error bodies and
headers, Kong's own errors (404 no route, 503 name resolution failed, 500 for other DNS
failures, 502 invalid upstream response, 504 upstream timeout), upstream hosts resolved through
Kong's DNS cache (kongdns.py), 1 + retries tries per request with nginx's error line for each,
the balancer's debug lines, a client's leaving as 499, the Server/Via/X-Kong-* headers, nginx
combined access lines on stdout and the error log on stderr. WebSocket upgrades and the
upstream keepalive pool are not emulated.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import http.client
import itertools
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import yaml
from kongdns import EMPTY_RECORD, NAME_ERROR, DnsClient, client_from_environment
from standin_common import (
    HOP_BY_HOP,
    BaseHandler,
    StandinServer,
    clf_time,
    env,
    install_signal_handlers,
    log_line,
    make_server,
    nginx_error_time,
    parse_go_bool,
    serve_until_signalled,
)

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    HAVE_CRYPTOGRAPHY = True
except ImportError:
    HAVE_CRYPTOGRAPHY = False

KONG_VERSION = "2.8.1"
SERVER = f"kong/{KONG_VERSION}"
JSON_CT = "application/json; charset=utf-8"
DEFAULT_TEMPLATE = "/home/kong/temp.yml"
DEFAULT_CONFIG = "/home/kong/kong.yml"
DEFAULT_LISTEN = "0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport"
BUNDLED_PLUGINS = (
    "acl", "acme", "aws-lambda", "azure-functions", "basic-auth", "bot-detection",
    "correlation-id", "cors", "datadog", "file-log", "grpc-gateway", "grpc-web", "hmac-auth",
    "http-log", "ip-restriction", "jwt", "key-auth", "ldap-auth", "loggly", "oauth2",
    "post-function", "pre-function", "prometheus", "proxy-cache", "rate-limiting",
    "request-size-limiting", "request-termination", "request-transformer",
    "response-ratelimiting", "response-transformer", "session", "statsd", "syslog",
    "tcp-log", "udp-log", "zipkin",
)
PRIORITY = {"cors": 2000, "key-auth": 1003, "basic-auth": 1001, "acl": 950,
            "request-transformer": 801}
UUID_NS = uuid.UUID("fd02801f-0957-4a15-a8b6-6bd8d6d8a44a")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ERROR_TEMPLATES = {
    "application/json": '{\n  "message":"%s"\n}',
    "text/html": (
        "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n"
        "    <title>Kong Error</title>\n  </head>\n  <body>\n    <h1>Kong Error</h1>\n"
        "    <p>%s.</p>\n  </body>\n</html>\n"
    ),
    "text/plain": "%s\n",
    "application/xml": (
        '<?xml version="1.0" encoding="UTF-8"?>\n<error>\n  <message>%s</message>\n</error>\n'
    ),
}
UPSTREAM_ERRORS = {
    500: "An unexpected error occurred",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out",
}


# nginx's error log levels, most severe first; KONG_LOG_LEVEL (default notice) is the least
# severe one written (kong.conf.default `log_level`; nginx_kong.lua:5 `error_log ... LOG_LEVEL`).
LOG_LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")


def err_log(level: str, message: str) -> None:
    """Write an nginx-style error log line to stderr, if KONG_LOG_LEVEL lets it through."""
    wanted = (env("KONG_LOG_LEVEL") or "notice").strip().lower()
    if wanted in LOG_LEVELS and LOG_LEVELS.index(level) > LOG_LEVELS.index(wanted):
        return
    log_line(f"{nginx_error_time()} [{level}] 1#0: {message}", sys.stderr)


# --- the entrypoint's eval ------------------------------------------------------------------


class ExpansionError(Exception):
    """The template breaks the entrypoint's `eval "echo \\"...\\""` (bash prints an error)."""

    def __init__(self, message: str, status: int = 2, partial: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.partial = partial


def _expand_dollar(text: str, i: int, environ: dict[str, str]) -> tuple[str, int]:
    """Expand the `$...` starting at text[i]; return (value, next index)."""
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if nxt == "{":
        end = text.find("}", i + 2)
        if end < 0:
            raise ExpansionError("unexpected EOF while looking for matching `}'")
        inner = text[i + 2:end]
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-=+])(.*))?", inner, re.S)
        if match is None:
            raise ExpansionError(f"${{{inner}}}: bad substitution", status=1)
        name, op, word = match.group(1), match.group(2), match.group(3) or ""
        value = environ.get(name)
        if op is None:
            return value or "", end + 1
        unset_or_empty = value is None or (op.startswith(":") and value == "")
        if op.endswith("-") or op.endswith("="):
            return (word if unset_or_empty else value or ""), end + 1
        return ("" if unset_or_empty else word), end + 1
    match = NAME_RE.match(text, i + 1)
    if match:
        return environ.get(match.group(0), ""), match.end()
    if nxt.isdigit():
        return ("bash" if nxt == "0" else ""), i + 2
    specials = {"$": str(os.getpid()), "#": "0", "?": "0", "!": "", "-": "hB", "@": "", "*": ""}
    if nxt in specials:
        return specials[nxt], i + 2
    if nxt == "(":
        err_log("warn", "the kong stand-in does not run command substitutions in kong.yml")
    return "$", i + 1


def _unterminated_quote(text: str) -> str | None:
    """The quote bash would find unterminated in `echo "<text>"`, if any."""
    quoted = True
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "'" and not quoted:
            end = text.find("'", i + 1)
            if end < 0:
                return "'"
            i = end
        i += 1
    return None if quoted else '"'


def _first_word(text: str) -> str:
    """The first shell word of text, quotes removed (names the next command)."""
    word: list[str] = []
    quoted = False
    for c in text.lstrip(" \t"):
        if c == '"':
            quoted = not quoted
        elif not quoted and c in " \t\n;":
            break
        else:
            word.append(c)
    return "".join(word)


def expand_like_entrypoint(text: str, environ: dict[str, str]) -> str:
    """Expand text as `eval "echo \\"$(cat file)\\""` does, for plain variables.

    The file's text sits inside double quotes, so `$VAR`, `${VAR}`, `${VAR:-x}` and the
    backslash escapes apply; a stray `"` ends the quoted string and what follows is split into
    words that echo rejoins with single spaces. An unbalanced quote is a parse error (nothing
    is written, status 2); an unquoted newline or `;` ends the echo and starts another command,
    which bash cannot find (status 127). Other shell syntax outside quotes is reported as a
    syntax error.
    """
    missing = _unterminated_quote(text)
    if missing is not None:
        raise ExpansionError(f"unexpected EOF while looking for matching `{missing}'")
    out: list[str] = []
    quoted = True
    i = 0
    while i < len(text):
        step = _quoted_step if quoted else _unquoted_step
        i, quoted = step(text, i, environ, out)
    return "".join(out).rstrip("\n") + "\n"


def _quoted_step(text: str, i: int, environ: dict[str, str], out: list[str]
                 ) -> tuple[int, bool]:
    """Expand what starts at text[i] inside double quotes; the next index, still quoted?"""
    c = text[i]
    if c == "\\" and i + 1 < len(text) and text[i + 1] in '$`"\\\n':
        if text[i + 1] != "\n":
            out.append(text[i + 1])
        return i + 2, True
    if c == '"':
        return i + 1, False
    if c == "$":
        value, i = _expand_dollar(text, i, environ)
        out.append(value)
        return i, True
    if c == "`":
        err_log("warn", "the kong stand-in does not run command substitutions")
    out.append(c)
    return i + 1, True


def _unquoted_step(text: str, i: int, environ: dict[str, str], out: list[str]
                   ) -> tuple[int, bool]:
    """Expand what starts at text[i] outside quotes (words echo rejoins); the next index."""
    c = text[i]
    n = len(text)
    if c in " \t":
        while i < n and text[i] in " \t":
            i += 1
        out.append(" ")
    elif c == '"':
        return i + 1, True
    elif c == "'":
        end = text.find("'", i + 1)
        out.append(text[i + 1:end])
        i = end + 1
    elif c == "\\":
        if i + 1 < n and text[i + 1] != "\n":
            out.append(text[i + 1])
        i += 2
    elif c == "$":
        value, i = _expand_dollar(text, i, environ)
        out.append(" ".join(value.split()))
    elif c == "#" and (not out or out[-1] == " "):
        while i < n and text[i] != "\n":
            i += 1
    else:
        _reject_command_syntax(text, i, out)
        out.append(c)
        i += 1
    return i, False


def _reject_command_syntax(text: str, i: int, out: list[str]) -> None:
    """Fail as bash does on an unquoted command separator or operator at text[i]."""
    c = text[i]
    if c in "\n;":
        command = _first_word(text[i + 1:] + '"')
        raise ExpansionError(f"{command}: command not found", status=127,
                             partial="".join(out).rstrip(" ") + "\n")
    if c in "&|<>()":
        raise ExpansionError(f"syntax error near unexpected token `{c}'")


# --- declarative configuration ---------------------------------------------------------------


class ConfigInvalid(Exception):
    """The declarative configuration is rejected; the message is what Kong prints."""


def pretty_error(err: Any, item: str = "", indent: str = "") -> str:
    """Render a nested error table the way Kong's declarative loader prints it."""
    lines: list[str] = []
    for key in sorted(err, key=lambda k: (isinstance(k, str), str(k).zfill(8))):
        value = err[key]
        pretty = f"- in entry {key} of '{item}'" if isinstance(key, int) else f"in '{key}'"
        if isinstance(value, dict):
            lines.append(f"{indent}{pretty}:")
            lines.append(pretty_error(value, str(key), indent + "  "))
        else:
            lines.append(f"{indent}{pretty}: {value}")
    return "\n".join(lines)


def _set_err(errors: dict[Any, Any], path: list[Any], message: str) -> None:
    """Record message at path in a nested error table."""
    node = errors
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = message


@dataclass
class Consumer:
    """A consumer with its credentials and ACL groups."""

    username: str
    id: str
    custom_id: str | None = None
    groups: list[str] = field(default_factory=list)


@dataclass
class Service:
    """An upstream service."""

    name: str | None
    scheme: str
    host: str
    port: int
    path: str
    connect_timeout: float
    read_timeout: float
    write_timeout: float
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    retries: int = 5  # kong/db/schema/entities/services.lua:32


@dataclass
class Route:
    """A route to a service."""

    name: str | None
    service: Service | None
    paths: list[str]
    methods: list[str]
    hosts: list[str]
    strip_path: bool
    preserve_host: bool
    order: int
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Gateway:
    """Everything the proxy needs, built from the declarative config."""

    routes: list[Route]
    global_plugins: dict[str, dict[str, Any]]
    consumers: dict[str, Consumer]
    keys: dict[str, tuple[Consumer, str]]
    basic: dict[str, tuple[str, Consumer, str]]


PLUGIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "key-auth": {"key_names": ["apikey"], "hide_credentials": False, "anonymous": None,
                 "key_in_header": True, "key_in_query": True, "key_in_body": False,
                 "run_on_preflight": True},
    "basic-auth": {"hide_credentials": False, "anonymous": None},
    "acl": {"allow": None, "deny": None, "hide_groups_header": False},
    "cors": {"origins": None, "methods": None, "headers": None, "exposed_headers": None,
             "credentials": False, "max_age": None, "preflight_continue": False},
    "request-transformer": {"add": {}, "append": {}, "replace": {}, "remove": {}},
}


def _truthy(value: str | None) -> bool:
    """Kong-style boolean env values (on/off, true/false)."""
    if not value:
        return False
    if value.lower() in ("on", "yes"):
        return True
    try:
        return parse_go_bool(value)
    except ValueError:
        return False


def enabled_plugins() -> set[str]:
    """KONG_PLUGINS as a set; `bundled` stands for Kong's bundled plugins."""
    names: set[str] = set()
    for item in (env("KONG_PLUGINS") or "bundled").split(","):
        item = item.strip()
        if item == "bundled":
            names.update(BUNDLED_PLUGINS)
        elif item and item != "off":
            names.add(item)
    return names


class Builder:
    """Validate a parsed declarative config and build the Gateway, as Kong 2.8 would."""

    def __init__(self, doc: Any, strict: bool, fallback_timeout: float) -> None:
        self.doc = doc
        self.strict = strict
        self.fallback_timeout = fallback_timeout
        self.errors: dict[Any, Any] = {}
        self.plugins_enabled = enabled_plugins()
        self.seen: dict[tuple[str, str], bool] = {}

    def fail(self, path: list[Any], message: str) -> None:
        """Record a validation error."""
        _set_err(self.errors, path, message)

    def unique(self, entity: str, name: Any, path: list[Any]) -> bool:
        """Track names; return False when a duplicate must be dropped (strict mode)."""
        if not isinstance(name, str):
            return True
        if (entity, name) in self.seen and self.strict:
            self.fail(path, f"uniqueness violation: '{entity}' entity with name set to "
                      f"'{name}' already declared")
            return False
        self.seen[(entity, name)] = True
        return True

    def plugin_entry(self, item: Any, where: list[Any]) -> tuple[str, dict[str, Any]] | None:
        """Validate one plugin entry into (name, config with defaults)."""
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            self.fail([*where, "name"], "required field missing")
            return None
        name = item["name"]
        if name not in self.plugins_enabled:
            self.fail([*where, "name"], f"plugin '{name}' not enabled; add it to the "
                      "'plugins' configuration property")
            return None
        if item.get("enabled") is False:
            return None
        conf = dict(PLUGIN_DEFAULTS.get(name, {}))
        conf.update(item.get("config") or {})
        if name == "acl" and not conf.get("allow") and not conf.get("deny"):
            self.fail([*where, "config"], "at least one of these fields must be non-empty: "
                      "'config.allow', 'config.deny'")
            return None
        if name not in PLUGIN_DEFAULTS:
            err_log("warn", f"plugin '{name}' is accepted but not run by the kong stand-in")
        return name, conf

    def plugin_list(self, items: Any, path: list[Any]) -> dict[str, dict[str, Any]]:
        """Validate a list of plugin entries into {name: config}."""
        plugins: dict[str, dict[str, Any]] = {}
        if items is None:
            return plugins
        if not isinstance(items, list):
            self.fail(path, "expected an array")
            return plugins
        for index, item in enumerate(items, 1):
            entry = self.plugin_entry(item, [*path, index])
            if entry is not None:
                plugins[entry[0]] = entry[1]
        return plugins

    def service(self, item: Any, path: list[Any]) -> Service | None:
        """Validate one service entry."""
        if not isinstance(item, dict):
            self.fail(path, "expected a record")
            return None
        scheme, host, port, svc_path = "http", item.get("host"), item.get("port"), item.get("path")
        if item.get("url") is not None:
            parts = urlsplit(str(item["url"]))
            if not parts.hostname:
                self.fail([*path, "url"], "missing host in url")
                return None
            scheme, host, svc_path = parts.scheme or "http", parts.hostname, parts.path or None
            port = parts.port
        scheme = str(item.get("protocol") or scheme)
        if scheme not in ("http", "https", "ws", "wss", "grpc", "grpcs", "tcp", "tls", "udp"):
            self.fail([*path, "protocol"], "expected one of: grpc, grpcs, http, https, tcp, "
                      "tls, tls_passthrough, udp")
            return None
        if not host:
            self.fail([*path, "host"], "required field missing")
            return None
        retries = item.get("retries", 5)
        if not isinstance(retries, int) or isinstance(retries, bool):
            self.fail([*path, "retries"], "expected an integer")
            return None
        if not 0 <= retries <= 32767:
            self.fail([*path, "retries"], "value should be between 0 and 32767")
            return None
        secure = scheme in ("https", "wss", "grpcs", "tls")
        default = self.fallback_timeout
        return Service(
            name=item.get("name"),
            scheme="https" if secure else "http",
            host=str(host),
            port=int(port or (443 if secure else 80)),
            path=str(svc_path or "/"),
            connect_timeout=float(item.get("connect_timeout") or default * 1000) / 1000,
            read_timeout=float(item.get("read_timeout") or default * 1000) / 1000,
            write_timeout=float(item.get("write_timeout") or default * 1000) / 1000,
            retries=retries,
        )

    def route(self, item: Any, path: list[Any], service: Service | None,
              order: int) -> Route | None:
        """Validate one route entry."""
        if not isinstance(item, dict):
            self.fail(path, "expected a record")
            return None
        paths = item.get("paths") or []
        methods = [str(m).upper() for m in item.get("methods") or []]
        hosts = [str(h).lower() for h in item.get("hosts") or []]
        if not (paths or methods or hosts or item.get("headers")):
            self.fail(path, "must set one of 'methods', 'hosts', 'headers', 'paths' when "
                      "'protocols' is 'http'")
            return None
        for index, value in enumerate(paths, 1):
            if not isinstance(value, str) or not value.startswith("/"):
                self.fail([*path, "paths", index], "should start with: /")
                return None
        return Route(
            name=item.get("name"),
            service=service,
            paths=[str(p) for p in paths],
            methods=methods,
            hosts=hosts,
            strip_path=item.get("strip_path", True) is not False,
            preserve_host=bool(item.get("preserve_host", False)),
            order=order,
            plugins=self.plugin_list(item.get("plugins"), [*path, "plugins"]),
        )

    def build(self) -> Gateway:
        """Validate everything and return the Gateway, or raise ConfigInvalid."""
        doc = self.doc
        if not isinstance(doc, dict):
            raise ConfigInvalid("failed parsing declarative configuration: expected an object")
        if "_format_version" not in doc:
            self.fail(["_format_version"], "required field missing")
        consumers = self.consumers(doc)
        services: dict[str, Service] = {}
        routes: dict[Any, Route] = {}
        order = itertools.count(1)  # routes in the order the file declares them
        for s_index, item in enumerate(doc.get("services") or [], 1):
            self.service_with_routes(item, s_index, services, routes, order)
        for r_index, r_item in enumerate(doc.get("routes") or [], 1):
            self.top_route(r_item, r_index, services, routes, order)
        global_plugins = self.top_plugins(doc, services, routes)
        if self.errors:
            raise ConfigInvalid(pretty_error(self.errors))
        keys, basic = self.credential_tables()
        return Gateway(list(routes.values()), global_plugins, consumers, keys, basic)

    def service_with_routes(self, item: Any, s_index: int, services: dict[str, Service],
                            routes: dict[Any, Route], order: Iterator[int]) -> None:
        """One services entry, its plugins and its nested routes."""
        path: list[Any] = ["services", s_index]
        if not self.unique("services", (item or {}).get("name"), path):
            return
        service = self.service(item, path)
        if service is None:
            return
        service.plugins = self.plugin_list(item.get("plugins"), [*path, "plugins"])
        # Kong 2.8 derives an entity's id from its name: a second entry with the same
        # name replaces the first one.
        services[service.name or f"#{s_index}"] = service
        for r_index, r_item in enumerate(item.get("routes") or [], 1):
            r_path = [*path, "routes", r_index]
            if not self.unique("routes", (r_item or {}).get("name"), r_path):
                continue
            route = self.route(r_item, r_path, service, next(order))
            if route is not None:
                routes[route.name or f"#{s_index}.{r_index}"] = route

    def top_route(self, r_item: Any, r_index: int, services: dict[str, Service],
                  routes: dict[Any, Route], order: Iterator[int]) -> None:
        """One top-level routes entry, attached to its service by name (or to none)."""
        r_path: list[Any] = ["routes", r_index]
        if not self.unique("routes", (r_item or {}).get("name"), r_path):
            return
        ref = (r_item or {}).get("service")
        ref_name = ref.get("name") if isinstance(ref, dict) else ref
        service = services.get(str(ref_name)) if ref_name else None
        if ref_name and service is None:
            self.fail([*r_path, "service"], f"invalid reference 'service: {ref_name}' "
                      "(no such entry in 'services')")
            return
        route = self.route(r_item, r_path, service, next(order))
        if route is not None:
            routes[route.name or f"#top.{r_index}"] = route

    def credential_tables(self) -> tuple[dict[str, tuple[Consumer, str]],
                                         dict[str, tuple[str, Consumer, str]]]:
        """The key-auth keys and basic-auth usernames, each with its consumer and id."""
        keys: dict[str, tuple[Consumer, str]] = {}
        basic: dict[str, tuple[str, Consumer, str]] = {}
        for consumer, kind, cred in self.credentials:
            cred_id = str(uuid.uuid5(UUID_NS, f"{kind}:{consumer.username}:{cred}"))
            if kind == "key":
                keys[cred[0]] = (consumer, cred_id)
            else:
                basic[cred[0]] = (cred[1], consumer, cred_id)
        return keys, basic

    def consumers(self, doc: dict[str, Any]) -> dict[str, Consumer]:
        """Consumers and their credentials, nested or top-level."""
        consumers: dict[str, Consumer] = {}
        self.credentials: list[tuple[Consumer, str, tuple[str, ...]]] = []
        for index, item in enumerate(doc.get("consumers") or [], 1):
            consumer = self.consumer(item, ["consumers", index])
            if consumer is not None:
                consumers[consumer.username] = consumer
        for kind in ("keyauth_credentials", "basicauth_credentials", "acls"):
            for index, cred in enumerate(doc.get(kind) or [], 1):
                self.top_credential(kind, cred, [kind, index], consumers)
        return consumers

    def consumer(self, item: Any, path: list[Any]) -> Consumer | None:
        """One consumers entry with its nested credentials and ACL groups."""
        if not isinstance(item, dict) or not (item.get("username") or item.get("custom_id")):
            self.fail(path, "at least one of these fields must be non-empty: "
                      "'custom_id', 'username'")
            return None
        username = str(item.get("username") or item.get("custom_id"))
        if not self.unique("consumers", username, path):
            return None
        consumer = Consumer(username, str(uuid.uuid5(UUID_NS, f"consumer:{username}")),
                            item.get("custom_id"))
        for c_index, cred in enumerate(item.get("keyauth_credentials") or [], 1):
            self.key_credential(consumer, cred, [*path, "keyauth_credentials", c_index])
        for c_index, cred in enumerate(item.get("basicauth_credentials") or [], 1):
            self.basic_credential(consumer, cred, [*path, "basicauth_credentials", c_index])
        for acl in item.get("acls") or []:
            if isinstance(acl, dict) and acl.get("group"):
                consumer.groups.append(str(acl["group"]))
        return consumer

    def top_credential(self, kind: str, cred: Any, path: list[Any],
                       consumers: dict[str, Consumer]) -> None:
        """A top-level credential or ACL entry, given to the consumer it names."""
        ref = cred.get("consumer") if isinstance(cred, dict) else None
        ref_name = ref.get("username") if isinstance(ref, dict) else ref
        owner = consumers.get(str(ref_name)) if ref_name is not None else None
        if owner is None:
            self.fail([*path, "consumer"], f"invalid reference 'consumer: {ref_name}' "
                      "(no such entry in 'consumers')")
            return
        if kind == "keyauth_credentials":
            self.key_credential(owner, cred, path)
        elif kind == "basicauth_credentials":
            self.basic_credential(owner, cred, path)
        elif cred.get("group"):
            owner.groups.append(str(cred["group"]))
        else:
            self.fail([*path, "group"], "required field missing")

    def key_credential(self, consumer: Consumer, cred: Any, path: list[Any]) -> None:
        """A key-auth credential; a null key is generated, an empty one is invalid."""
        key = cred.get("key") if isinstance(cred, dict) else None
        if key is None:
            key = uuid.uuid4().hex
        key = str(key)
        if key == "":
            self.fail([*path, "key"], "length must be at least 1")
            return
        self.credentials.append((consumer, "key", (key,)))

    def basic_credential(self, consumer: Consumer, cred: Any, path: list[Any]) -> None:
        """A basic-auth credential; both fields are required strings."""
        if not isinstance(cred, dict):
            self.fail(path, "expected a record")
            return
        for name in ("username", "password"):
            value = cred.get(name)
            if value is None:
                self.fail([*path, name], "required field missing")
                return
            if str(value) == "":
                self.fail([*path, name], "length must be at least 1")
                return
        self.credentials.append((consumer, "basic", (str(cred["username"]),
                                                     str(cred["password"]))))

    def top_plugins(self, doc: dict[str, Any], services: dict[str, Service],
                    routes: dict[Any, Route]) -> dict[str, dict[str, Any]]:
        """Top-level plugins: attached to a service or route by name, else global."""
        global_plugins: dict[str, dict[str, Any]] = {}
        for index, item in enumerate(doc.get("plugins") or [], 1):
            path: list[Any] = ["plugins", index]
            entry = self.plugin_entry(item, path)
            if entry is None:
                continue
            parsed = {entry[0]: entry[1]}
            ref_s = item.get("service") if isinstance(item, dict) else None
            ref_r = item.get("route") if isinstance(item, dict) else None
            if ref_s is not None:
                name = ref_s.get("name") if isinstance(ref_s, dict) else ref_s
                if str(name) not in services:
                    self.fail([*path, "service"], f"invalid reference 'service: {name}' "
                              "(no such entry in 'services')")
                    continue
                services[str(name)].plugins.update(parsed)
            elif ref_r is not None:
                name = ref_r.get("name") if isinstance(ref_r, dict) else ref_r
                if name not in routes:
                    self.fail([*path, "route"], f"invalid reference 'route: {name}' "
                              "(no such entry in 'routes')")
                    continue
                routes[name].plugins.update(parsed)
            else:
                global_plugins.update(parsed)
        return global_plugins


def init_error(config_path: str, detail: str) -> str:
    """The line nginx prints when Kong's init_by_lua fails on the declarative config."""
    return (
        "nginx: [error] init_by_lua error: /usr/local/share/lua/5.1/kong/init.lua:553: "
        f"error parsing declarative config file {config_path}:\n{detail}\n"
        "stack traceback:\n\t[C]: in function 'error'\n"
        "\t/usr/local/share/lua/5.1/kong/init.lua:553: in function 'init'\n"
        "\tinit_by_lua:3: in main chunk"
    )


def write_rendered(config_path: str, text: str) -> None:
    """Write the rendered config where the entrypoint's redirection puts it, if possible."""
    try:
        with open(config_path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        # The stand-in's container may lack a writable /home/kong; Kong loads the text from
        # memory here, so this only changes what `docker exec cat` would show.
        pass


def load_gateway() -> Gateway:
    """Run the entrypoint's rendering and Kong's loading; exit as they would on failure."""
    template = env("KONG_DECLARATIVE_CONFIG_TEMPLATE") or DEFAULT_TEMPLATE
    config_path = env("KONG_DECLARATIVE_CONFIG") or DEFAULT_CONFIG
    if (env("KONG_DATABASE") or "off") != "off":
        log_line("Error: the kong stand-in only runs DB-less (KONG_DATABASE=off)", sys.stderr)
        sys.exit(1)
    if os.path.exists(template):
        try:
            with open(template, encoding="utf-8") as handle:
                raw = handle.read()
        except OSError as exc:
            log_line(f"cat: can't open '{template}': {exc.strerror}", sys.stderr)
            raw = ""
        try:
            text = expand_like_entrypoint(raw, dict(os.environ))
        except ExpansionError as exc:
            # The shell's redirection has already truncated kong.yml when eval fails.
            write_rendered(config_path, exc.partial or "")
            log_line(f"bash: {exc}", sys.stderr)
            sys.exit(exc.status)
        write_rendered(config_path, text)
    else:
        try:
            with open(config_path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            log_line(f"cat: can't open '{template}': No such file or directory", sys.stderr)
            text = "\n"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.line + 1}:{mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        log_line(init_error(config_path, "failed parsing declarative configuration: "
                            f"{where}{problem}"), sys.stderr)
        sys.exit(1)
    strict = _truthy(env("KONG_STANDIN_STRICT_UNIQUENESS"))
    fallback = float(env("KONG_UPSTREAM_TIMEOUT") or 10)
    try:
        return Builder(doc, strict, fallback).build()
    except ConfigInvalid as exc:
        log_line(init_error(config_path, str(exc)), sys.stderr)
        sys.exit(1)


# --- request handling ------------------------------------------------------------------------


class KongExit(Exception):
    """A response Kong produces itself (plugin or router exit)."""

    def __init__(self, status: int, message: str | None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass
class Request:
    """The request as the plugins see and change it before proxying."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes
    consumer: Consumer | None = None
    credential_id: str | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> list[str]:
        """All values of a request header (case-insensitive)."""
        lower = name.lower()
        return [v for k, v in self.headers if k.lower() == lower]

    def set(self, name: str, value: str) -> None:
        """Replace a request header."""
        self.remove(name)
        self.headers.append((name, value))

    def remove(self, name: str) -> None:
        """Drop a request header."""
        lower = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != lower]


def set_consumer(req: Request, consumer: Consumer, credential_id: str | None) -> None:
    """kong.client.authenticate plus the X-Consumer-* upstream headers."""
    req.consumer = consumer
    req.credential_id = credential_id
    req.set("X-Consumer-ID", consumer.id)
    if consumer.custom_id:
        req.set("X-Consumer-Custom-ID", consumer.custom_id)
    else:
        req.remove("X-Consumer-Custom-ID")
    req.set("X-Consumer-Username", consumer.username)
    if credential_id:
        req.set("X-Credential-Identifier", credential_id)
        req.remove("X-Anonymous-Consumer")
    else:
        req.set("X-Anonymous-Consumer", "true")


def anonymous(gw: Gateway, conf: dict[str, Any]) -> Consumer | None:
    """The configured anonymous consumer, by id or username."""
    ref = conf.get("anonymous")
    if not ref:
        return None
    for consumer in gw.consumers.values():
        if ref in (consumer.id, consumer.username):
            return consumer
    raise KongExit(500, "An unexpected error occurred")


def run_key_auth(gw: Gateway, req: Request, conf: dict[str, Any]) -> None:
    """The key-auth plugin's access phase."""
    if not conf.get("run_on_preflight", True) and req.method == "OPTIONS":
        return
    key = _api_key(req, conf)
    if key and key in gw.keys:
        consumer, cred_id = gw.keys[key]
        set_consumer(req, consumer, cred_id)
        return
    if not key:
        error = KongExit(401, "No API key found in request",
                         [("WWW-Authenticate", 'Key realm="kong"')])
    else:
        error = KongExit(401, "Invalid authentication credentials")
    _anonymous_or_fail(gw, req, conf, error)


def _api_key(req: Request, conf: dict[str, Any]) -> str | None:
    """The key under the first of key_names the request carries (header, then query)."""
    for name in conf.get("key_names") or ["apikey"]:
        values = req.get(name) if conf.get("key_in_header", True) else []
        if not values and conf.get("key_in_query", True):
            values = [v for k, v in req.query if k == name]
        if len(values) > 1:
            raise KongExit(401, "Duplicate API key found")
        if values:
            if conf.get("hide_credentials"):
                req.remove(name)
                req.query = [(k, v) for k, v in req.query if k != name]
            return values[0]
    return None


def _anonymous_or_fail(gw: Gateway, req: Request, conf: dict[str, Any],
                       error: KongExit) -> None:
    """Authenticate as the configured anonymous consumer, or raise the plugin's error."""
    anon = anonymous(gw, conf)
    if anon is None:
        raise error
    set_consumer(req, anon, None)


def run_basic_auth(gw: Gateway, req: Request, conf: dict[str, Any]) -> None:
    """The basic-auth plugin's access phase."""
    header_name = "Authorization"
    values = req.get("Authorization")
    if not values:
        header_name = "Proxy-Authorization"
        values = req.get("Proxy-Authorization")
    error: KongExit | None = None
    consumer: tuple[str, Consumer, str] | None = None
    username: str | None = None
    password: str | None = None
    if not values:
        error = KongExit(401, "Unauthorized", [("WWW-Authenticate", 'Basic realm="kong"')])
    else:
        match = re.fullmatch(r"\s*[Bb]asic\s+(\S+)\s*", values[0])
        if match:
            try:
                decoded = base64.b64decode(match.group(1), validate=True).decode()
                username, _, password = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                username = None
        found = gw.basic.get(username or "") if username else None
        if found is None or found[0] != password:
            error = KongExit(401, "Invalid authentication credentials")
        else:
            consumer = found
    if error is None and consumer is not None:
        if conf.get("hide_credentials"):
            req.remove(header_name)
        set_consumer(req, consumer[1], consumer[2])
        req.set("X-Credential-Username", username or "")
        return
    assert error is not None
    _anonymous_or_fail(gw, req, conf, error)


def run_acl(req: Request, conf: dict[str, Any]) -> None:
    """The acl plugin's access phase."""
    if req.consumer is None:
        raise KongExit(401, "Unauthorized")
    groups = set(req.consumer.groups)
    allow = conf.get("allow") or []
    deny = conf.get("deny") or []
    if (allow and not groups.intersection(allow)) or groups.intersection(deny):
        raise KongExit(403, "You cannot consume this service")
    if not conf.get("hide_groups_header") and groups:
        req.set("X-Consumer-Groups", ", ".join(req.consumer.groups))


def _remove_header(req: Request, name: str, value: str) -> None:
    """Drop the header."""
    req.remove(name)


def _replace_header(req: Request, name: str, value: str) -> None:
    """Set the header when the request has it."""
    if req.get(name):
        req.set(name, value)


def _add_header(req: Request, name: str, value: str) -> None:
    """Add the header when the request lacks it."""
    if not req.get(name):
        req.headers.append((name, value))


def _append_header(req: Request, name: str, value: str) -> None:
    """Add the header, also when present."""
    req.headers.append((name, value))


def _remove_query(req: Request, name: str, value: str) -> None:
    """Drop the query argument."""
    req.query = [(k, v) for k, v in req.query if k != name]


def _add_query(req: Request, name: str, value: str) -> None:
    """Add the query argument when the request lacks it."""
    if not any(k == name for k, _ in req.query):
        req.query.append((name, value))


# request-transformer's edits in the order it applies them: (config section, kind, edit).
TRANSFORMS: tuple[tuple[str, str, Callable[[Request, str, str], None]], ...] = (
    ("remove", "headers", _remove_header),
    ("replace", "headers", _replace_header),
    ("add", "headers", _add_header),
    ("append", "headers", _append_header),
    ("remove", "querystring", _remove_query),
    ("add", "querystring", _add_query),
)


def run_request_transformer(req: Request, conf: dict[str, Any]) -> None:
    """The request-transformer plugin: header and querystring edits."""
    for section, kind, edit in TRANSFORMS:
        for item in (conf.get(section) or {}).get(kind) or []:
            name, _, value = str(item).partition(":")
            edit(req, name, value)


# The access phase of each plugin the stand-in runs (cors is handled before them).
ACCESS_PHASE: dict[str, Callable[[Gateway, Request, dict[str, Any]], None]] = {
    "key-auth": run_key_auth,
    "basic-auth": run_basic_auth,
    "acl": lambda gw, req, conf: run_acl(req, conf),
    "request-transformer": lambda gw, req, conf: run_request_transformer(req, conf),
}


def route_plugins(gw: Gateway, route: Route) -> dict[str, dict[str, Any]]:
    """The plugins that apply to a route: global, then its service's, then its own."""
    plugins = dict(gw.global_plugins)
    if route.service is not None:
        plugins.update(route.service.plugins)
    plugins.update(route.plugins)
    return plugins


def run_access_phase(gw: Gateway, req: Request, plugins: dict[str, dict[str, Any]]) -> None:
    """Each plugin's access phase, highest PRIORITY first; a KongExit ends the request."""
    for name in sorted(plugins, key=lambda n: -PRIORITY.get(n, 0)):
        phase = ACCESS_PHASE.get(name)
        if phase is not None:
            phase(gw, req, plugins[name])


def cors_headers(req: Request, conf: dict[str, Any], origin: str | None) -> list[tuple[str, str]]:
    """The Access-Control-* headers the cors plugin adds to every response."""
    origins = conf.get("origins") or []
    headers: list[tuple[str, str]] = []
    if not origins or "*" in origins:
        headers.append(("Access-Control-Allow-Origin", "*"))
    else:
        if origin and origin in origins:
            headers.append(("Access-Control-Allow-Origin", origin))
        headers.append(("Vary", "Origin"))
    if conf.get("credentials"):
        headers.append(("Access-Control-Allow-Credentials", "true"))
    if conf.get("exposed_headers"):
        headers.append(("Access-Control-Expose-Headers", ",".join(conf["exposed_headers"])))
    return headers


def upstream_path(service: Service, route: Route, req_path: str, prefix: str | None) -> str:
    """Kong's (path_handling v0) join of the service path and the possibly stripped URI."""
    uri = req_path
    if route.strip_path and prefix:
        uri = req_path[len(prefix):]
        if not uri.startswith("/"):
            uri = "/" + uri
    base = service.path or "/"
    if base == "/":
        return uri
    if base.endswith("/"):
        return base + uri[1:] if uri.startswith("/") else base + uri
    return base if uri == "/" else base + uri


def match_route(gw: Gateway, method: str, host: str, path: str) -> tuple[Route, str | None] | None:
    """Pick the route as Kong's router does: most specific match, longest path prefix first."""
    best: tuple[tuple[int, int, int], Route, str | None] | None = None
    host = host.split(":", 1)[0].lower() if not host.startswith("[") else host
    for route in gw.routes:
        if route.methods and method not in route.methods:
            continue
        if route.hosts and not any(
            host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in route.hosts
        ):
            continue
        prefix: str | None = None
        if route.paths:
            matches = [p for p in route.paths if path.startswith(p)]
            if not matches:
                continue
            prefix = max(matches, key=len)
        categories = bool(route.methods) + bool(route.hosts) + bool(route.paths)
        rank = (categories, len(prefix or ""), -route.order)
        if best is None or rank > best[0]:
            best = (rank, route, prefix)
    return (best[1], best[2]) if best else None


# musl's strerror() texts: the real image is Alpine (docker-kong alpine/Dockerfile) and nginx
# writes strerror() into its error lines, e.g. "(113: Host is unreachable)".
MUSL_STRERROR = {
    errno.ECONNREFUSED: "Connection refused", errno.EHOSTUNREACH: "Host is unreachable",
    errno.ETIMEDOUT: "Operation timed out", errno.ECONNRESET: "Connection reset by peer",
    errno.ENETUNREACH: "Network unreachable", errno.EPIPE: "Broken pipe",
    errno.EADDRNOTAVAIL: "Address not available", errno.ECONNABORTED: "Connection aborted",
}
# nginx's default proxy_next_upstream is "error timeout"; a POST, LOCK or PATCH already sent
# is not tried again (ngx_http_upstream_next, nginx >= 1.9.13).
NON_IDEMPOTENT = frozenset({"POST", "LOCK", "PATCH"})
# Kong's upstream keepalive defaults (kong.conf.default:771-792), as its debug line names them.
KEEPALIVE = "pool_size=60, idle_timeout=60, max_requests=100"
# Only these DNS failures are "name resolution failed" (runloop/balancer/init.lua:310-319).
NOT_FOUND = (NAME_ERROR, EMPTY_RECORD)


def strerror(number: int | None) -> str:
    """The text musl's strerror() gives for an errno."""
    return MUSL_STRERROR.get(number or 0) or os.strerror(number or 0)


@dataclass
class Attempt:
    """How one try at the upstream ended."""

    kind: str  # ok, error, timeout (both tried again), aborted (client left), final
    text: str = ""
    sent: bool = False  # the request reached the upstream
    response: http.client.HTTPResponse | None = None
    payload: bytes = b""


# What nginx's upstream error lines say it was doing.
CONNECTING = "while connecting to upstream"
READING = "while reading response header from upstream"


def _not_ready(state: str, doing: str, sent: bool = False) -> Attempt:
    """The Attempt for a wait that timed out, or ("aborted") that the client left."""
    return Attempt(state, doing if state == "aborted" else
                   f"upstream timed out (110: Operation timed out) {doing}", sent=sent)


def _tls_client(sock: socket.socket, host: str) -> ssl.SSLSocket:
    """The TLS handshake to an https upstream (Kong does not verify it by default)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(sock, server_hostname=host)


class Handler(BaseHandler):
    """Kong's proxy listener."""

    gateway: Gateway
    dns: DnsClient
    scheme = "http"
    _connections = itertools.count(1)

    def setup(self) -> None:
        """Number the connection as nginx does (the *N of its log lines)."""
        self.connection_no = next(Handler._connections)
        self.served = 0
        super().setup()

    def handle_one_request(self) -> None:
        """One request; an idle keepalive connection the client closes is logged at info."""
        served = self.served
        # Stays None when reading the request line timed out: nginx closes an idle
        # connection silently; b"" means the client closed it.
        self.raw_requestline = None
        super().handle_one_request()
        if served and self.raw_requestline == b"":
            # ngx_http_keepalive_handler: no context is appended to this line.
            err_log("info", f"*{self.connection_no} client {self.client_ip()} closed "
                            "keepalive connection")

    def _dispatch(self) -> None:
        """Route, run plugins, proxy; then write the access log line."""
        self.served += 1
        try:
            self._handle()
        except (ConnectionError, TimeoutError):
            return
        self._access_log()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _access_log(self) -> None:
        """An nginx combined log line on stdout."""
        user = "-"
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user = base64.b64decode(auth[6:].strip()).decode().split(":", 1)[0] or "-"
            except (ValueError, UnicodeDecodeError):
                user = "-"
        referer = self.headers.get("Referer") or "-"
        agent = self.headers.get("User-Agent") or "-"
        log_line(f'{self.client_ip()} - {user} [{clf_time()}] "{self.requestline}" '
                 f'{self.status_sent} {self.bytes_sent} "{referer}" "{agent}"')

    def _context_line(self, level: str, text: str, upstream: str | None = None) -> None:
        """A line with the request context nginx appends (client, server, request, ...)."""
        tail = f', upstream: "{upstream}"' if upstream else ""
        err_log(level, f'*{self.connection_no} {text}, client: {self.client_ip()}, '
                f'server: kong, request: "{self.requestline}"{tail}, '
                f'host: "{self.headers.get("Host", "")}"')

    def _error_line(self, text: str, upstream: str | None = None) -> None:
        """An [error] line with the request context."""
        self._context_line("error", text, upstream)

    def _debug(self, text: str) -> None:
        """A [debug] line from Kong's balancer (written without the request context)."""
        err_log("debug", f"*{self.connection_no} {text}")

    def _exit(self, err: KongExit, extra: list[tuple[str, str]]) -> None:
        """Send a Kong-generated response: JSON {"message"}, Server and latency headers."""
        body = b""
        if err.message is not None:
            body = json.dumps({"message": err.message}, separators=(",", ":")).encode()
        headers = [*err.headers, *extra, ("X-Kong-Response-Latency", str(self.elapsed_ms())),
                   ("Server", SERVER)]
        self.send_body(err.status, body, headers,
                       content_type=JSON_CT if err.message is not None else None)

    def _upstream_error(self, status: int, extra: list[tuple[str, str]],
                        proxy_ms: int, upstream_ms: int) -> None:
        """Kong's error page for a failed proxy attempt, negotiated on Accept.

        The page is served after Kong marked the request proxied (init.lua:866), so
        header_filter sets Via and the latency headers but not Kong's Server header
        (runloop/handler.lua:1595-1628); nginx's own `server_tokens off` Server header stays.
        """
        accept = (self.headers.get("Accept") or self.headers.get("Content-Type") or "")
        mime = "application/json"
        for candidate in ("text/html", "application/xml", "text/plain", "application/json"):
            if accept.startswith(candidate):
                mime = candidate
                break
        body = (ERROR_TEMPLATES[mime] % UPSTREAM_ERRORS[status]).encode()
        headers = [("Server", "openresty"), *extra,
                   ("X-Kong-Upstream-Latency", str(upstream_ms)),
                   ("X-Kong-Proxy-Latency", str(proxy_ms)), ("Via", SERVER)]
        self.send_body(status, body, headers, content_type=f"{mime}; charset=utf-8")

    def _handle(self) -> None:
        """The access phase, then the proxying."""
        req = self._read_request()
        if req is None:
            return
        found = match_route(self.gateway, self.command, self.headers.get("Host", ""), req.path)
        if found is None:
            self._exit(KongExit(404, "no Route matched with those values"), [])
            return
        route, prefix = found
        plugins = route_plugins(self.gateway, route)
        # cors has the highest PRIORITY, so it runs (and answers a preflight) before the rest.
        cors = plugins.get("cors")
        after = cors_headers(req, cors, self.headers.get("Origin")) if cors is not None else []
        if cors is not None and req.method == "OPTIONS" and not cors.get("preflight_continue"):
            self._exit(KongExit(200, None), self._preflight_headers(cors, after))
            return
        try:
            run_access_phase(self.gateway, req, plugins)
        except KongExit as err:
            self._exit(err, after)
            return
        if route.service is None:
            self._exit(KongExit(503, "no Service found with those values"), after)
            return
        self._proxy(route, route.service, prefix, req, after)

    def _read_request(self) -> Request | None:
        """The request as the plugins see it; None when its body was refused (413 sent)."""
        parts = urlsplit(self.path)
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True
            self._exit(KongExit(413, "Request size limit exceeded"), [])
            return None
        return Request(self.command, parts.path or "/", parse_qsl(parts.query, True),
                       list(self.headers.items()), body)

    def _preflight_headers(self, conf: dict[str, Any], after: list[tuple[str, str]]
                           ) -> list[tuple[str, str]]:
        """The cors plugin's answer to a preflight: its headers plus the Allow-* ones."""
        methods = conf.get("methods") or ["GET", "HEAD", "PUT", "PATCH", "POST",
                                          "DELETE", "OPTIONS", "TRACE", "CONNECT"]
        pre = [*after, ("Access-Control-Allow-Methods", ",".join(methods))]
        allow = conf.get("headers")
        requested = self.headers.get("Access-Control-Request-Headers")
        if allow:
            pre.append(("Access-Control-Allow-Headers", ",".join(allow)))
        elif requested:
            pre.append(("Access-Control-Allow-Headers", requested))
        if conf.get("max_age"):
            pre.append(("Access-Control-Max-Age", str(conf["max_age"])))
        return pre

    def _proxy(self, route: Route, service: Service, prefix: str | None, req: Request,
               after: list[tuple[str, str]]) -> None:
        """Resolve through Kong's DNS cache, then up to 1 + retries tries, as Kong 2.8.1.

        The first resolution runs in the access phase (runloop/handler.lua:1498): a failure is
        Kong's own 503 (not found) or 500. Each try logs Kong's two balancer debug lines
        (init.lua:1006, 1035) and each failed try nginx's [error] line; a retry resolves again
        through the cache (init.lua:953). A client that leaves ends the request (499).
        """
        target = upstream_path(service, route, req.path, prefix)
        if req.query:
            target += "?" + urlencode(req.query)
        address, found, tries = self.dns.toip(service.host, service.port)
        if address is None:
            self._error_line(f"[lua] init.lua:310: execute(): DNS resolution failed: {found}. "
                             f"Tried: {tries}")
            self._exit(KongExit(503, "name resolution failed") if found in NOT_FOUND
                       else KongExit(500, "An unexpected error occurred"), after)
            return
        headers = self._upstream_headers(route, service, prefix, req)
        last = Attempt("error")
        peer: str | None = None
        balanced = time.monotonic()
        for number in range(1, service.retries + 2):
            if number > 1:
                address, found, tries = self.dns.toip(service.host, service.port)
                if address is None:
                    self._context_line(
                        "error", "[lua] init.lua:955: balancer(): failed to retry the "
                        f"dns/balancer resolver for {service.host}' with: {found} while "
                        "connecting to upstream", peer)
                    self._upstream_error(503 if found in NOT_FOUND else 500, after,
                                         self._ms(self.started, balanced), 0)
                    return
            port = int(found)
            balanced = time.monotonic()
            self._debug(f"[lua] init.lua:1006: balancer(): setting address (try {number}): "
                        f"{address}:{port}")
            pool = f"{address}|{port}" + (f"|{service.host}" if service.scheme == "https"
                                          else "")
            self._debug(f"[lua] init.lua:1035: balancer(): enabled connection keepalive "
                        f"(pool={pool}, {KEEPALIVE})")
            host = f"[{address}]" if ":" in str(address) else address
            peer = f"{service.scheme}://{host}:{port}{target}"
            last = self._attempt(service, str(address), port, target, headers, req)
            if last.kind == "ok" and last.response is not None:
                self._relay(last.response, last.payload, after,
                            self._ms(self.started, balanced), self._ms(balanced))
                return
            if last.kind == "aborted":
                self._context_line("info", "epoll_wait() reported that client prematurely "
                                   "closed connection, so upstream connection is closed too "
                                   f"{last.text}", peer)
                self.status_sent, self.bytes_sent = 499, 0
                self.close_connection = True
                return
            self._error_line(last.text, peer)
            if last.kind == "final" or (last.sent and req.method in NON_IDEMPOTENT):
                break
        self._upstream_error(504 if last.kind == "timeout" else 502, after,
                             self._ms(self.started, balanced), self._ms(balanced))

    @staticmethod
    def _ms(since: float, until: float | None = None) -> int:
        """Milliseconds from since to until (default now)."""
        return int(((until if until is not None else time.monotonic()) - since) * 1000)

    def _relay(self, response: http.client.HTTPResponse, payload: bytes,
               after: list[tuple[str, str]], proxy_ms: int, upstream_ms: int) -> None:
        """Pass the upstream's answer on with Kong's proxy headers."""
        # Plugins set (not add) their response headers, replacing the upstream's.
        replaced = {name.lower() for name, _ in after} | {"content-length", "date"}
        out = [(k, v) for k, v in response.getheaders()
               if k.lower() not in HOP_BY_HOP and k.lower() not in replaced]
        out += after
        out += [("X-Kong-Upstream-Latency", str(upstream_ms)),
                ("X-Kong-Proxy-Latency", str(proxy_ms)), ("Via", SERVER)]
        self.send_body(response.status, payload, out)

    def _client_left(self) -> bool:
        """True when the client closed its side (nginx's broken-connection check)."""
        try:
            return bool(self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _wait(self, sock: socket.socket, writing: bool, timeout: float) -> str:
        """Wait for sock: "ready", "timeout", or "aborted" when the client leaves first."""
        if not writing and isinstance(sock, ssl.SSLSocket) and sock.pending():
            return "ready"
        deadline = time.monotonic() + timeout
        # TLS records cannot be peeked at, so a TLS client's leaving is not watched.
        watch = not isinstance(self.connection, ssl.SSLSocket)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            readers: list[Any] = [self.connection] if watch else []
            if not writing:
                readers.append(sock)
            readable, writable, _ = select.select(readers, [sock] if writing else [], [],
                                                  min(remaining, 1.0))
            if sock in readable or sock in writable:
                return "ready"
            if self.connection in readable:
                if self._client_left():
                    return "aborted"
                watch = False  # a pipelined request waits its turn

    def _attempt(self, service: Service, address: str, port: int, target: str,
                 headers: list[tuple[str, str]], req: Request) -> Attempt:
        """One try: connect, send, read the answer; how it ended, in nginx's words."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        conn: http.client.HTTPConnection | None = None
        try:
            failed = self._connect(sock, service, address, port)
            if failed is not None:
                return failed
            if service.scheme == "https":
                try:
                    sock = _tls_client(sock, service.host)
                except (OSError, ssl.SSLError) as exc:
                    return Attempt("error", f"SSL_do_handshake() failed ({exc}) while SSL "
                                            "handshaking to upstream")
            conn = http.client.HTTPConnection(address, port)
            conn.sock = sock
            try:
                conn.putrequest(req.method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(req.body if req.body else None)
            except OSError as exc:
                return Attempt("error", f"send() failed ({exc.errno}: {strerror(exc.errno)}) "
                                        "while sending request to upstream")
            return self._response(sock, conn, service)
        finally:
            if conn is not None:
                conn.close()
            sock.close()

    def _connect(self, sock: socket.socket, service: Service, address: str, port: int
                 ) -> Attempt | None:
        """Connect within connect_timeout; the failed Attempt, or None once connected."""
        sock.setblocking(False)
        code = sock.connect_ex((address, port))
        if code not in (0, errno.EINPROGRESS):
            return Attempt("error", f"connect() failed ({code}: {strerror(code)}) {CONNECTING}")
        state = self._wait(sock, True, service.connect_timeout)
        if state != "ready":
            return _not_ready(state, CONNECTING)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            return Attempt("error", f"connect() failed ({code}: {strerror(code)}) {CONNECTING}")
        sock.setblocking(True)
        sock.settimeout(service.write_timeout)
        return None

    def _response(self, sock: socket.socket, conn: http.client.HTTPConnection,
                  service: Service) -> Attempt:
        """Wait for the answer to the sent request and read it within read_timeout."""
        state = self._wait(sock, False, service.read_timeout)
        if state != "ready":
            return _not_ready(state, READING, sent=True)
        sock.settimeout(service.read_timeout)
        try:
            response = conn.getresponse()
        except TimeoutError:
            return Attempt("timeout", f"upstream timed out (110: Operation timed out) "
                                      f"{READING}", sent=True)
        except http.client.RemoteDisconnected:
            return Attempt("error", f"upstream prematurely closed connection {READING}",
                           sent=True)
        except http.client.HTTPException:
            return Attempt("final", f"upstream sent invalid header {READING}", sent=True)
        except OSError as exc:
            return Attempt("error", f"recv() failed ({exc.errno}: {strerror(exc.errno)}) "
                                    f"{READING}", sent=True)
        try:
            payload = response.read()
        except (http.client.HTTPException, OSError):
            # The header has passed: nginx no longer tries another peer.
            return Attempt("final", "upstream prematurely closed connection while reading "
                                    "upstream", sent=True)
        return Attempt("ok", sent=True, response=response, payload=payload)

    def _upstream_headers(self, route: Route, service: Service, prefix: str | None,
                          req: Request) -> list[tuple[str, str]]:
        """The request headers sent upstream: hop-by-hop removed, X-Forwarded-* added."""
        connection_tokens = {t.strip().lower() for v in req.get("Connection")
                             for t in v.split(",")}
        headers = [(k, v) for k, v in req.headers
                   if k.lower() not in HOP_BY_HOP and k.lower() not in connection_tokens
                   and k.lower() not in ("host", "content-length")]
        client = self.client_ip()
        forwarded = req.get("X-Forwarded-For")
        host_header = self.headers.get("Host") or ""
        headers = [(k, v) for k, v in headers if not k.lower().startswith("x-forwarded-")
                   and k.lower() != "x-real-ip"]
        default_port = 443 if service.scheme == "https" else 80
        upstream_host = service.host if service.port == default_port else (
            f"{service.host}:{service.port}")
        local_port = str(self.server.server_address[1])  # type: ignore[index]
        headers += [
            ("Host", host_header if route.preserve_host and host_header else upstream_host),
            ("X-Forwarded-For", f"{forwarded[0]}, {client}" if forwarded else client),
            ("X-Forwarded-Proto", self.scheme),
            ("X-Forwarded-Host", host_header.split(":", 1)[0] if host_header else ""),
            ("X-Forwarded-Port", local_port),
            ("X-Forwarded-Path", req.path),
            ("X-Real-IP", client),
        ]
        if req.body or req.method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(req.body))))
        if route.strip_path and prefix and prefix != "/":
            headers.append(("X-Forwarded-Prefix", prefix.rstrip("/") or "/"))
        return headers


class TLSHandler(Handler):
    """The ssl listener (8443)."""

    scheme = "https"


def self_signed_context() -> ssl.SSLContext | None:
    """A TLS context with Kong's kind of default cert: self-signed for localhost."""
    cert, key = env("KONG_SSL_CERT"), env("KONG_SSL_CERT_KEY")
    if not (cert and key):
        cert, key = _generate_cert()
    if not (cert and key):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def _generate_cert() -> tuple[str | None, str | None]:
    """Make a self-signed cert with `cryptography`, else `openssl`; (None, None) if neither."""
    try:
        directory = tempfile.mkdtemp(prefix="kong-ssl-")
    except OSError:
        return None, None
    cert = os.path.join(directory, "kong-default.crt")
    key = os.path.join(directory, "kong-default.key")
    if not HAVE_CRYPTOGRAPHY:
        openssl = shutil.which("openssl")
        if openssl is None:
            return None, None
        try:
            subprocess.run(
                [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                 "-subj", "/C=US/ST=California/L=San Francisco/O=Kong/OU=IT Department"
                 "/CN=localhost", "-keyout", key, "-out", cert],
                check=True, capture_output=True, timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            return None, None
        return cert, key
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kong"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
                   .sign(private, hashes.SHA256()))
    with open(cert, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key, "wb") as handle:
        handle.write(private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert, key


def listeners() -> list[tuple[str, int, bool]]:
    """Parse KONG_PROXY_LISTEN into (host, port, ssl) entries."""
    out: list[tuple[str, int, bool]] = []
    for entry in (env("KONG_PROXY_LISTEN") or DEFAULT_LISTEN).split(","):
        words = entry.split()
        if not words or words[0] == "off":
            continue
        host, _, port = words[0].rpartition(":")
        out.append((host.strip("[]") or "0.0.0.0", int(port), "ssl" in words[1:]))
    return out


# --- the kong command: `kong health` ----------------------------------------------------------
# Kong 2.8.1's CLI (kong/cmd/init.lua, kong/cmd/health.lua, kong/cmd/utils/kill.lua): the
# image's HEALTHCHECK runs `kong health`, which reads <prefix>/.kong_env (written by `kong
# prepare` in docker-start) and checks the nginx pid in <prefix>/pids/nginx.pid with kill -0.

DEFAULT_PREFIX = "/usr/local/kong"  # kong_defaults.lua: prefix = /usr/local/kong/
KONG_COMMANDS = ("check", "config", "health", "hybrid", "migrations", "prepare", "quit",
                 "reload", "restart", "roar", "start", "stop", "vault", "version")
CLI_OPTIONS = " --v              verbose\n --vv             debug\n"
CLI_USAGE = ("Usage: kong COMMAND [OPTIONS]\n\nThe available commands are:\n "
             + "\n ".join(KONG_COMMANDS) + "\n\nOptions:\n" + CLI_OPTIONS)
HEALTH_USAGE = ("Usage: kong health [OPTIONS]\n\nCheck if the necessary services are running "
                "for this node.\n\nOptions:\n -p,--prefix      (optional string) prefix at "
                "which Kong should be running\n" + CLI_OPTIONS)


def kong_prefix(given: str | None = None) -> str:
    """The prefix as conf_loader finds it: -p, else KONG_PREFIX, else the default."""
    return os.path.normpath(given or env("KONG_PREFIX") or DEFAULT_PREFIX)


def prepare_prefix() -> str:
    """What `kong prepare -p $PREFIX` leaves for `kong health`: the dirs and .kong_env."""
    prefix = kong_prefix()
    for sub in ("", "pids", "logs"):
        os.makedirs(os.path.join(prefix, sub), exist_ok=True)
    settings = {"prefix": prefix}
    settings.update({k[5:].lower(): v for k, v in sorted(os.environ.items())
                     if k.startswith("KONG_") and k != "KONG_PREFIX"})
    with open(os.path.join(prefix, ".kong_env"), "w", encoding="utf-8") as handle:
        handle.writelines(f"{key} = {value}\n" for key, value in settings.items())
    return prefix


def write_pid(prefix: str) -> None:
    """nginx writes its pid once its configuration (and init_by_lua) loaded."""
    with open(os.path.join(prefix, "pids", "nginx.pid"), "w", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")


def _running(pid_file: str) -> bool:
    """kill -0 `cat pid_file`, as kill.is_running does."""
    try:
        with open(pid_file, encoding="utf-8") as handle:
            os.kill(int(handle.read().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _kong_env_prefix(path: str) -> str | None:
    """The prefix line of a .kong_env file (conf_loader's own parse of it)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            key, sep, value = line.partition("=")
            if sep and key.strip() == "prefix" and value.strip():
                return value.strip()
    return None


def health(prefix_arg: str | None) -> int:
    """`kong health`: nginx's pid under the prefix; Kong's messages and exit codes."""
    prefix = kong_prefix(prefix_arg)
    if not os.path.exists(prefix):
        return _cli_error(f"no such prefix: {prefix}")
    kong_env = os.path.join(prefix, ".kong_env")
    if not os.path.exists(kong_env):
        return _cli_error(f"Kong is not running at {prefix}")
    # Environment variables win over the file in conf_loader, as they do here.
    prefix = kong_prefix(prefix_arg or env("KONG_PREFIX") or _kong_env_prefix(kong_env))
    running = _running(os.path.join(prefix, "pids", "nginx.pid"))
    print("nginx".ljust(12, ".") + ("running" if running else "not running"))
    print("")
    if not running:
        return _cli_error(f"Kong is not running at {prefix}")
    print(f"Kong is healthy at {prefix}")
    return 0


def _cli_error(message: str) -> int:
    """An error as kong/cmd/init.lua reports it (without --v), exit code 1."""
    sys.stdout.flush()
    sys.stderr.write(f"Error: {message}\n\n  Run with --v (verbose) or --vv (debug) for more "
                     "details\n")
    return 1


def _usage_error(message: str | None, usage: str) -> int:
    """lapp.quit: the message, then the usage, exit code 1."""
    if message:
        sys.stderr.write(f"{message}\n\n")
    sys.stderr.write(usage)
    return 1


def cli(argv: list[str]) -> int:
    """The `kong` command of the fleet's kong image: `health` and `version`."""
    if not argv:
        return _usage_error(None, CLI_USAGE)
    command, args = argv[0], argv[1:]
    if command not in KONG_COMMANDS:
        return _usage_error(f"No such command: {command}", CLI_USAGE)
    if command == "version":
        print(KONG_VERSION)
        return 0
    if command != "health":
        return _cli_error(f"'kong {command}' is not part of the fleet's kong stand-in "
                          "(only health and version are)")
    prefix: str | None = None
    while args:
        word = args.pop(0)
        if word in ("--v", "--vv"):
            continue
        if word in ("-p", "--prefix") and args:
            prefix = args.pop(0)
        elif word.startswith("--prefix="):
            prefix = word.split("=", 1)[1]
        else:
            return _usage_error(f"unrecognized parameter: {word}", HEALTH_USAGE)
    return health(prefix)


def main() -> None:
    """Load the config (or exit as Kong would), open the listeners, serve until SIGTERM."""
    install_signal_handlers()
    prefix = prepare_prefix()
    gateway = load_gateway()
    Handler.gateway = gateway
    Handler.dns = client_from_environment()
    servers: list[StandinServer] = []
    context: ssl.SSLContext | None = None
    for host, port, secure in listeners():
        handler: type[Handler] = Handler
        if secure:
            context = context or self_signed_context()
            if context is None:
                err_log("warn", f"kong stand-in: no TLS tooling, {host}:{port} serves plain HTTP")
            else:
                handler = TLSHandler
        try:
            servers.append(make_server(host, port, handler, wildcard_dual_stack=False,
                                       ssl_context=context if handler is TLSHandler else None))
        except OSError as exc:
            err_log("emerg", f'bind() to {host}:{port} failed ({exc.errno}: {exc.strerror})')
            sys.exit(1)
    write_pid(prefix)
    err_log("notice", 'using the "epoll" event method')
    err_log("notice", "openresty/1.19.9.1")
    err_log("notice", "start worker processes")
    serve_until_signalled(servers)


if __name__ == "__main__":
    main()
