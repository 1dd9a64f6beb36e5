"""Which credential Claude Code will use, and when a login's token expires.

Read-only by design: cbos never writes Claude's credentials (refreshing them is Claude's
job) and never prints a secret, only where it comes from and, for a login, its expiry.

Claude Code's order (its authentication docs): a cloud provider selected by environment
(Bedrock, Vertex, Foundry), then ``ANTHROPIC_AUTH_TOKEN``, ``ANTHROPIC_API_KEY``, an
``apiKeyHelper`` in its settings, ``CLAUDE_CODE_OAUTH_TOKEN``, and last the login stored
by ``/login`` in ``<config dir>/.credentials.json`` (``claudeAiOauth.expiresAt``, ms).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbos.transcript import claude_dir

WARN_WITHIN = 24 * 3600.0
PROVIDERS = (("CLAUDE_CODE_USE_BEDROCK", "Amazon Bedrock"),
             ("CLAUDE_CODE_USE_VERTEX", "Google Vertex AI"),
             ("CLAUDE_CODE_USE_FOUNDRY", "Microsoft Foundry"))


@dataclass(frozen=True)
class Credential:
    kind: str  # provider, auth_token, api_key, api_key_helper, oauth_token, login, none
    source: str  # where it comes from, in words (never the secret)
    expires_at: float | None = None  # epoch seconds, for a login
    renewable: bool = False  # a login with a refresh token: Claude renews it itself
    subscription: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "expires_at": self.expires_at,
                "renewable": self.renewable, "subscription": self.subscription}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def _helper(config_dir: Path) -> str | None:
    try:
        data = json.loads((config_dir / "settings.json").read_bytes())
    except (OSError, ValueError):
        return None
    helper = data.get("apiKeyHelper") if isinstance(data, dict) else None
    return helper if isinstance(helper, str) and helper.strip() else None


def _login(config_dir: Path) -> Credential | None:
    path = config_dir / ".credentials.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return Credential("login", f"{path} (unreadable: {type(exc).__name__})")
    oauth = data.get("claudeAiOauth") if isinstance(data, dict) else None
    if not isinstance(oauth, Mapping) or not oauth.get("accessToken"):
        return None
    expires = oauth.get("expiresAt")
    at = expires / 1000 if isinstance(expires, int | float) and expires > 0 else None
    plan = oauth.get("subscriptionType")
    return Credential("login", f"Claude login in {path}", at, bool(oauth.get("refreshToken")),
                      plan if isinstance(plan, str) else None)


def credential(environ: Mapping[str, str] | None = None) -> Credential:
    """The credential Claude started now would use (the first that is set)."""
    env = os.environ if environ is None else environ
    for name, provider in PROVIDERS:
        if _truthy(env.get(name)):
            return Credential("provider", f"{provider} ({name}=1): the provider's own "
                              "credentials")
    for name, kind in (("ANTHROPIC_AUTH_TOKEN", "auth_token"),
                       ("ANTHROPIC_API_KEY", "api_key")):
        if env.get(name):
            return Credential(kind, f"{name} in the environment")
    config_dir = claude_dir(env)
    helper = _helper(config_dir)
    if helper is not None:
        return Credential("api_key_helper", f"apiKeyHelper in {config_dir / 'settings.json'}")
    if env.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return Credential("oauth_token", "CLAUDE_CODE_OAUTH_TOKEN in the environment")
    login = _login(config_dir)
    if login is not None:
        return login
    return Credential("none", "no credential found: run `claude` and /login, or set "
                      "ANTHROPIC_API_KEY")


def expiry_warning(cred: Credential, now: float | None = None) -> str | None:
    """A one-line warning when a login's token has expired or expires within a day and
    Claude cannot renew it; else None."""
    if cred.kind == "none":
        return cred.source
    if cred.expires_at is None or cred.renewable:
        return None
    left = cred.expires_at - (time.time() if now is None else now)
    if left <= 0:
        return "Claude's login has expired; run `claude` and /login"
    if left <= WARN_WITHIN:
        return (f"Claude's login expires in {left / 3600:.1f} h; run `claude` and /login "
                "before then")
    return None


def describe(cred: Credential, now: float | None = None) -> str:
    """`cbos auth`'s text."""
    lines = [f"Claude uses: {cred.source}"]
    if cred.subscription:
        lines.append(f"subscription: {cred.subscription}")
    if cred.expires_at is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(cred.expires_at))
        renew = " (Claude renews it itself: a refresh token is stored)" if cred.renewable \
            else ""
        lines.append(f"token expires: {stamp}{renew}")
    warning = expiry_warning(cred, now)
    if warning and cred.kind != "none":
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
