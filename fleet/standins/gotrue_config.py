"""GoTrue v2.167.0's configuration loading, as the GoTrue stand-in needs it.

Real GoTrue fills its GlobalConfiguration with envconfig v1.4.0 (`envconfig.Process("gotrue",
config)`, internal/conf/configuration.go:803), then runs ApplyDefaults (:880) and Validate
(:1041). This module does the same for the settings the stand-in honours, in the order of
GoTrue's struct fields, so the first bad setting is the one real GoTrue names:

- envconfig looks a key up with os.LookupEnv, then its alternative name; a key that is set
  but empty is *set*: the default is not used and the value goes to the field's parser
  (envconfig.go:193-215), so "" is fatal for a bool, an int or a duration;
- a required key that is not set at all is `required key <alt or key> missing value`;
- a value its parser rejects is envconfig's ParseError (envconfig.go:217-223, text in
  envconfig.go `ParseError.Error`);
- ApplyDefaults turns the JWT secret into a JWK with jwx v2.1.0 `jwk.FromRaw`, which refuses
  an empty secret (jwk/symmetric.go:16, jwk/jwk.go:68);
- Validate parses API_EXTERNAL_URL with Go's url.ParseRequestURI.

cmd/root_cmd.go:40 logs any of these with `logrus.Fatalf("Failed to load configuration:
%+v", err)` before it configures logging (root_cmd.go:43), so that line is in logrus's
default text format, not JSON: `time="..." level=fatal msg="Failed to load configuration:
..."` (seen verbatim in a real log, Seneca-CDOT/telescope#3447).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import NoReturn

from standin_common import parse_go_bool, rfc3339

# GoTrue's defaultMinPasswordLength (configuration.go).
MIN_PASSWORD_LENGTH = 6
# The OAuth providers of ProviderConfiguration, in struct order (configuration.go:311-342),
# with the key part envconfig builds for each: split_words or an envconfig tag where set.
PROVIDERS: tuple[tuple[str, str], ...] = (
    ("apple", "APPLE"), ("azure", "AZURE"), ("bitbucket", "BITBUCKET"),
    ("discord", "DISCORD"), ("facebook", "FACEBOOK"), ("figma", "FIGMA"), ("fly", "FLY"),
    ("github", "GITHUB"), ("gitlab", "GITLAB"), ("google", "GOOGLE"), ("kakao", "KAKAO"),
    ("notion", "NOTION"), ("keycloak", "KEYCLOAK"), ("linkedin", "LINKEDIN"),
    ("linkedin_oidc", "LINKEDIN_OIDC"), ("spotify", "SPOTIFY"), ("slack", "SLACK"),
    ("slack_oidc", "SLACK_OIDC"), ("twitter", "TWITTER"), ("twitch", "TWITCH"),
    ("vercel_marketplace", "VERCEL_MARKETPLACE"), ("workos", "WORKOS"),
)
# Providers /settings lists under "external" (api/settings.go); vercel_marketplace is not one.
SETTINGS_PROVIDERS = tuple(name for name, _ in PROVIDERS if name != "vercel_marketplace")


class ConfigError(Exception):
    """The environment cannot be loaded the way GoTrue loads it (the text is GoTrue's)."""


@dataclass(frozen=True)
class Setting:
    """One GlobalConfiguration field as envconfig reads it."""

    name: str  # the stand-in's name for the value
    key: str  # the key envconfig builds from the struct path (GOTRUE_ prefix included)
    go_field: str  # the Go field name envconfig's ParseError names
    kind: str  # Go type: string, bool, int, uint, time.Duration, []string
    default: str | None = None
    alt: str | None = None  # the envconfig:"..." tag, looked up when key is not set
    required: bool = False


def _provider_settings() -> tuple[Setting, ...]:
    # AnonymousUsers, then the OAuth providers, Email, Phone and Zoom, in struct order.
    out = [Setting("external_anonymous_users", "GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED",
                   "Enabled", "bool", "false")]
    out += [Setting(f"external_{name}", f"GOTRUE_EXTERNAL_{key}_ENABLED", "Enabled", "bool")
            for name, key in PROVIDERS]
    out += [
        Setting("external_email", "GOTRUE_EXTERNAL_EMAIL_ENABLED", "Enabled", "bool", "true"),
        Setting("external_phone", "GOTRUE_EXTERNAL_PHONE_ENABLED", "Enabled", "bool",
                "false"),
        Setting("external_zoom", "GOTRUE_EXTERNAL_ZOOM_ENABLED", "Enabled", "bool"),
    ]
    return tuple(out)


# GlobalConfiguration's fields that the stand-in honours or that the Ultrabase template sets,
# in the order envconfig visits them (configuration.go:147-275). Other settings are not read.
SETTINGS: tuple[Setting, ...] = (
    Setting("api_host", "GOTRUE_API_HOST", "Host", "string"),
    Setting("api_port", "GOTRUE_API_PORT", "Port", "string", "8081", alt="PORT"),
    Setting("request_id_header", "GOTRUE_API_REQUEST_ID_HEADER", "RequestIDHeader", "string",
            alt="REQUEST_ID_HEADER"),
    Setting("external_url", "GOTRUE_API_API_EXTERNAL_URL", "ExternalURL", "string",
            alt="API_EXTERNAL_URL", required=True),
    Setting("max_request_duration", "GOTRUE_API_MAX_REQUEST_DURATION", "MaxRequestDuration",
            "time.Duration", "10s"),
    Setting("db_driver", "GOTRUE_DB_DRIVER", "Driver", "string", required=True),
    Setting("db_url", "GOTRUE_DB_DATABASE_URL", "URL", "string", alt="DATABASE_URL",
            required=True),
    Setting("db_namespace", "GOTRUE_DB_DB_NAMESPACE", "Namespace", "string", "auth",
            alt="DB_NAMESPACE"),
    *_provider_settings(),
    Setting("smtp_max_frequency", "GOTRUE_SMTP_MAX_FREQUENCY", "MaxFrequency",
            "time.Duration"),
    Setting("smtp_port", "GOTRUE_SMTP_PORT", "Port", "int", "587"),
    Setting("smtp_logging_enabled", "GOTRUE_SMTP_LOGGING_ENABLED", "LoggingEnabled", "bool",
            "false"),
    Setting("site_url", "GOTRUE_SITE_URL", "SiteURL", "string", required=True),
    Setting("uri_allow_list", "GOTRUE_URI_ALLOW_LIST", "URIAllowList", "[]string"),
    Setting("password_min_length", "GOTRUE_PASSWORD_MIN_LENGTH", "MinLength", "int"),
    Setting("jwt_secret", "GOTRUE_JWT_SECRET", "Secret", "string", required=True),
    Setting("jwt_exp", "GOTRUE_JWT_EXP", "Exp", "int"),
    Setting("jwt_aud", "GOTRUE_JWT_AUD", "Aud", "string"),
    Setting("jwt_admin_roles", "GOTRUE_JWT_ADMIN_ROLES", "AdminRoles", "[]string"),
    Setting("jwt_default_group", "GOTRUE_JWT_DEFAULT_GROUP_NAME", "DefaultGroupName",
            "string"),
    Setting("mailer_autoconfirm", "GOTRUE_MAILER_AUTOCONFIRM", "Autoconfirm", "bool"),
    Setting("mailer_allow_unverified", "GOTRUE_MAILER_ALLOW_UNVERIFIED_EMAIL_SIGN_INS",
            "AllowUnverifiedEmailSignIns", "bool", "false"),
    Setting("mailer_secure_email_change", "GOTRUE_MAILER_SECURE_EMAIL_CHANGE_ENABLED",
            "SecureEmailChangeEnabled", "bool", "true"),
    Setting("mailer_otp_exp", "GOTRUE_MAILER_OTP_EXP", "OtpExp", "uint"),
    Setting("mailer_otp_length", "GOTRUE_MAILER_OTP_LENGTH", "OtpLength", "int"),
    Setting("sms_autoconfirm", "GOTRUE_SMS_AUTOCONFIRM", "Autoconfirm", "bool"),
    Setting("sms_max_frequency", "GOTRUE_SMS_MAX_FREQUENCY", "MaxFrequency", "time.Duration"),
    Setting("sms_otp_exp", "GOTRUE_SMS_OTP_EXP", "OtpExp", "uint"),
    Setting("sms_otp_length", "GOTRUE_SMS_OTP_LENGTH", "OtpLength", "int"),
    Setting("sms_provider", "GOTRUE_SMS_PROVIDER", "Provider", "string"),
    Setting("disable_signup", "GOTRUE_DISABLE_SIGNUP", "DisableSignup", "bool"),
    Setting("saml_enabled", "GOTRUE_SAML_ENABLED", "Enabled", "bool"),
)

Value = str | bool | int | float | list[str]


def go_quote(text: str) -> str:
    """A string quoted as Go's %q / strconv.Quote does (JSON's escaping is close enough)."""
    return json.dumps(text, ensure_ascii=False)


_INT = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO]?[0-7]*|[1-9][0-9]*)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}


def _parse_int(value: str, func: str) -> int:
    """strconv.ParseInt/ParseUint(value, 0, 64): base prefixes, no spaces, no empty string."""
    if not _INT.fullmatch(value) or (func == "ParseUint" and value[:1] in "+-"):
        raise ValueError(f"strconv.{func}: parsing {go_quote(value)}: invalid syntax")
    digits = value.lstrip("+-")
    if re.fullmatch(r"0[0-7]+", digits):
        number = int(digits, 8)  # Go's base 0 reads a leading 0 as octal
        return -number if value.startswith("-") else number
    return int(value, 0)


def parse_duration(value: str) -> float:
    """time.ParseDuration, in seconds; ValueError with Go's message otherwise."""
    text = value.lstrip("+-")
    if text == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            if re.fullmatch(r"[0-9.]+", text[pos:]) and text[pos:] != ".":
                raise ValueError(f"time: missing unit in duration {go_quote(value)}")
            raise ValueError(f"time: invalid duration {go_quote(value)}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError(f"time: invalid duration {go_quote(value)}")
    return -total if value.startswith("-") else total


def _process(setting: Setting, value: str) -> Value:
    """envconfig's processField for the Go kinds used here; ValueError with Go's text."""
    if setting.kind == "string":
        return value
    if setting.kind == "bool":
        try:
            return parse_go_bool(value)
        except ValueError:
            raise ValueError(f"strconv.ParseBool: parsing {go_quote(value)}: invalid syntax"
                             ) from None
    if setting.kind in ("int", "uint"):
        return _parse_int(value, "ParseInt" if setting.kind == "int" else "ParseUint")
    if setting.kind == "time.Duration":
        return parse_duration(value)
    if setting.kind == "[]string":
        return value.split(",") if value.strip() else []
    raise AssertionError(setting.kind)


def envconfig_process(environ: dict[str, str] | None = None) -> dict[str, Value | None]:
    """envconfig.Process("gotrue", ...) over SETTINGS; None for a key with no value."""
    env = os.environ if environ is None else environ
    values: dict[str, Value | None] = {}
    for setting in SETTINGS:
        ok = setting.key in env
        value = env.get(setting.key, "")
        if not ok and setting.alt is not None:
            ok = setting.alt in env
            value = env.get(setting.alt, "")
        if not ok and setting.default is not None:
            value = setting.default
        if not ok and setting.default is None:
            if setting.required:
                raise ConfigError(f"required key {setting.alt or setting.key} missing value")
            values[setting.name] = None
            continue
        try:
            values[setting.name] = _process(setting, value)
        except ValueError as exc:
            raise ConfigError(
                f"envconfig.Process: assigning {setting.key} to {setting.go_field}: converting "
                f"'{value}' to type {setting.kind}. details: {exc}") from None
    return values


def parse_request_uri(url: str) -> None:
    """Go's url.ParseRequestURI, as far as an absolute URL or a path is concerned."""
    if url == "":
        raise ConfigError('parse "": empty url')
    if not (url.startswith("/") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", url)):
        raise ConfigError(f"parse {go_quote(url)}: invalid URI for request")


@dataclass(frozen=True)
class Config:
    """The part of GoTrue's configuration this stand-in honours."""

    host: str
    port: str  # a string in GoTrue too: net.JoinHostPort(Host, Port)
    db_url: str
    db_namespace: str
    jwt_secret: str
    jwt_aud: str
    jwt_exp: int
    admin_roles: tuple[str, ...]
    default_group: str
    disable_signup: bool
    email_enabled: bool
    phone_enabled: bool
    anonymous_enabled: bool
    mailer_autoconfirm: bool
    sms_autoconfirm: bool
    sms_provider: str
    saml_enabled: bool
    password_min_length: int
    request_id_header: str
    max_request_seconds: float
    external: dict[str, bool] = field(default_factory=dict)


def load_config(environ: dict[str, str] | None = None) -> Config:
    """Process, ApplyDefaults and Validate, failing with GoTrue's own error texts."""
    v = envconfig_process(environ)
    # ApplyDefaults (configuration.go:880-1010): the secret becomes a JWK first of all.
    if not v["jwt_secret"]:
        raise ConfigError("failed to initialize *jwk.symmetricKey from []uint8: "
                          "non-empty []byte key required")
    if v["mailer_autoconfirm"] and v["mailer_allow_unverified"]:
        raise ConfigError("cannot enable both GOTRUE_MAILER_AUTOCONFIRM and "
                          "GOTRUE_MAILER_ALLOW_UNVERIFIED_EMAIL_SIGN_INS")
    # Validate (configuration.go:1041): API first.
    parse_request_uri(str(v["external_url"]))

    def text(name: str, default: str = "") -> str:
        value = v[name]
        return str(value) if value else default

    def flag(name: str) -> bool:
        return bool(v[name])

    def number(name: str) -> float:
        value = v[name]  # int, uint and time.Duration settings: a number, or None
        return value if isinstance(value, int | float) else 0

    # envconfig splits on "," and keeps spaces; GoTrue compares roles exactly.
    listed = v["jwt_admin_roles"]
    roles = tuple(listed) if isinstance(listed, list) else ()
    min_length = int(number("password_min_length"))
    return Config(
        host=text("api_host"),
        port=text("api_port"),
        db_url=text("db_url"),
        db_namespace=text("db_namespace", "auth"),
        jwt_secret=text("jwt_secret"),
        jwt_aud=text("jwt_aud"),
        jwt_exp=int(number("jwt_exp")) or 3600,
        admin_roles=roles or ("service_role", "supabase_admin"),
        default_group=text("jwt_default_group"),
        disable_signup=flag("disable_signup"),
        email_enabled=flag("external_email"),
        phone_enabled=flag("external_phone"),
        anonymous_enabled=flag("external_anonymous_users"),
        mailer_autoconfirm=flag("mailer_autoconfirm"),
        sms_autoconfirm=flag("sms_autoconfirm"),
        sms_provider=text("sms_provider"),
        saml_enabled=flag("saml_enabled"),
        password_min_length=max(min_length, MIN_PASSWORD_LENGTH),
        request_id_header=text("request_id_header"),
        max_request_seconds=float(number("max_request_duration")),
        external={name: flag(f"external_{name}") for name in SETTINGS_PROVIDERS},
    )


def fatal_text(msg: str) -> NoReturn:
    """logrus.Fatalf before logging is configured: its text format on stderr, exit 1."""
    line = f'time="{rfc3339()}" level=fatal msg={go_quote(msg)}'
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    finally:
        os._exit(1)
