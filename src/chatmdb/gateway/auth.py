"""Who a client is and what it may do: tokens, principals, and the rule of every operation.

A client presents one credential, in ``auth: {token}`` on Socket.IO and in
``Authorization: Bearer`` over HTTP. :class:`Authenticator` turns it into a
:class:`Principal`:

* the static token (``--token``, ``CHATMDB_TOKEN``) is an administrator;
* a JWT signed with ``--jwt-secret`` (HS256) or the key of
  ``--jwt-public-key`` (RS256, ES256) is the principal of its claims:
  ``sub`` (required) names it, ``exp`` bounds it, ``sessions`` and
  ``read_sessions`` list its grants (a session id, or a prefix ending in
  ``*``; ``"*"`` alone is every session), ``agent_id`` binds its messages to
  one agent, ``admin: true`` makes it an administrator;
* with no credential configured, every client is an administrator (the
  server then answers loopback Host names only).

:data:`RULES` is the rule of every Socket.IO event and HTTP route, checked
before the operation runs; a refusal raises :class:`Forbidden` (``forbidden``,
HTTP 403), a bad or missing credential :class:`Unauthorized` (401). A record
reached by its own id (a message, context or task) that is unknown, or in a
session the token does not grant, gets one and the same refusal
(:func:`check_through`): the answer tells neither whether it exists nor its
session.
A principal's grants are decoded once per token, so the check of an event is
a set lookup and a few prefix comparisons, never a signature check.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..errors import ChatMDBError, Forbidden, NotFound, Unauthorized, ValidationError

__all__ = [
    "ADMIN",
    "HTTP_RULES",
    "RULES",
    "Authenticator",
    "Grants",
    "JwtSettings",
    "Principal",
    "Rule",
    "check_through",
]

MAX_ID_LENGTH: Final = 256
# Grants one token may carry: each is checked on every event, so keep them few.
MAX_GRANTS: Final = 1_000
# Verified tokens remembered (HTTP presents one per request), until they expire.
CACHE_SIZE: Final = 1_024
# The longest credential looked at: larger ones are refused before any decoding,
# so the cache holds at most CACHE_SIZE times this many characters.
MAX_TOKEN_LENGTH: Final = 16_384
# Seconds an issuer's clock may run ahead of this server's for nbf and iat;
# exp gets none: a connection is ended at exp, so a token is expired from exp on.
CLOCK_SKEW: Final = 30


class Grants:
    """A set of sessions named by id or by prefix (``"team-7/*"``); ``"*"`` is every session."""

    __slots__ = ("everything", "ids", "prefixes")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        ids: set[str] = set()
        prefixes: list[str] = []
        for pattern in patterns:
            if pattern.endswith("*"):
                prefixes.append(pattern[:-1])
            else:
                ids.add(pattern)
        self.ids = frozenset(ids)
        self.everything = "" in prefixes
        self.prefixes = tuple(sorted(set(prefixes)))

    @classmethod
    def from_claim(cls, claims: Mapping[str, Any], name: str) -> Grants:
        """The grants of claim *name*; :class:`Unauthorized` when it is not a list of session patterns."""
        value = claims.get(name, [])
        if not isinstance(value, list) or len(value) > MAX_GRANTS:
            raise Unauthorized(f"the token's {name} claim must be a list of at most {MAX_GRANTS} session ids")
        for item in value:
            if not isinstance(item, str) or not 0 < len(item) <= MAX_ID_LENGTH:
                raise Unauthorized(f"the token's {name} claim must hold session ids (1 to {MAX_ID_LENGTH} characters)")
        return cls(value)

    def __contains__(self, session_id: str) -> bool:
        return self.everything or session_id in self.ids or session_id.startswith(self.prefixes)

    def __bool__(self) -> bool:
        return self.everything or bool(self.ids) or bool(self.prefixes)


NO_GRANTS: Final = Grants()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection or request acts for, and what it may do.

    ``sub`` is stamped as ``sender`` on the messages it writes (None for the
    static token and for a server without tokens); ``expires_at`` is the
    token's ``exp`` in seconds since the epoch, or None.
    """

    sub: str | None
    admin: bool = False
    read: Grants = NO_GRANTS
    write: Grants = NO_GRANTS
    agent_id: str | None = None
    expires_at: float | None = None

    @property
    def reads_all(self) -> bool:
        """Whether every session is readable (no listing needs filtering)."""
        return self.admin or self.read.everything or self.write.everything

    @property
    def readable(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The ids and the id prefixes of the sessions this principal may read (when not :attr:`reads_all`)."""
        return self.read.ids | self.write.ids, tuple(sorted(set(self.read.prefixes) | set(self.write.prefixes)))

    def can_read(self, session_id: str) -> bool:
        return self.admin or session_id in self.write or session_id in self.read

    def can_write(self, session_id: str) -> bool:
        return self.admin or session_id in self.write

    def check_read(self, session_id: str) -> None:
        """Raise :class:`Forbidden` unless this principal may read *session_id*."""
        if not self.can_read(session_id):
            raise Forbidden(f"this token grants no read access to session {session_id!r:.80}")

    def check_write(self, session_id: str) -> None:
        """Raise :class:`Forbidden` unless this principal may write to *session_id*."""
        if not self.can_write(session_id):
            raise Forbidden(f"this token grants no write access to session {session_id!r:.80}")

    def check_admin(self, what: str) -> None:
        if not self.admin:
            raise Forbidden(f"{what} needs an admin token")

    def check_create(self, session_id: str | None) -> None:
        """Raise :class:`Forbidden` unless this principal may create a session with this id."""
        if self.admin:
            return
        if session_id is None:
            raise Forbidden("give a session_id inside this token's sessions grants to create a session")
        self.check_write(session_id)

    def stamp(self, record: dict[str, Any]) -> dict[str, Any]:
        """A message *record* as this principal may store it: ``sender`` set, ``agent_id`` bound.

        Raises :class:`Forbidden` for an ``agent_id`` the token does not bind.
        """
        agent = record.get("agent_id")
        if self.agent_id is not None:
            if agent is None:
                record["agent_id"] = self.agent_id
            elif agent != self.agent_id:
                raise Forbidden(f"this token writes as agent_id {self.agent_id!r:.80} only")
        elif agent is not None and not self.admin:
            raise Forbidden("this token has no agent_id claim: its messages may carry no agent_id")
        if self.sub is not None:
            record["sender"] = self.sub
        return record


ADMIN: Final = Principal(sub=None, admin=True)
"""The principal of the static token, and of every client of a server without tokens."""


@dataclass(frozen=True)
class JwtSettings:
    """How JWTs are verified: the key, its algorithm, and the ``aud`` and ``iss`` required, if any."""

    key: Any
    algorithm: str
    audience: str | None = None
    issuer: str | None = None

    @classmethod
    def from_secret(cls, secret: str, audience: str | None = None, issuer: str | None = None) -> JwtSettings:
        """HS256 with a shared *secret*; :class:`ValidationError` when it is too short to be one."""
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash (32 bytes).
        if not isinstance(secret, str) or len(secret.encode()) < 32:
            raise ValidationError("the JWT secret must be at least 32 bytes long")
        return cls(secret, "HS256", audience, issuer)

    @classmethod
    def from_public_key(cls, path: Path, audience: str | None = None, issuer: str | None = None) -> JwtSettings:
        """RS256 or ES256, as the PEM public key in *path* is RSA or EC; :class:`ValidationError` otherwise."""
        try:
            key = load_pem_public_key(path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise ValidationError(f"cannot read a PEM public key from {str(path)!r}: {exc}") from exc
        if isinstance(key, rsa.RSAPublicKey):
            return cls(key, "RS256", audience, issuer)
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
            return cls(key, "ES256", audience, issuer)
        raise ValidationError(f"{str(path)!r} holds neither an RSA key (RS256) nor a P-256 EC key (ES256)")


class Authenticator:
    """Turns a presented credential into a :class:`Principal`.

    :param token: the static token (an administrator), or None.
    :param jwt_settings: how to verify JWTs, or None to accept none.
    With neither, every caller is :data:`ADMIN`.
    """

    def __init__(self, token: str | None = None, jwt_settings: JwtSettings | None = None) -> None:
        self._token = None if token is None else token.encode("utf-8", "surrogatepass")
        self.jwt = jwt_settings
        self._cache: OrderedDict[str, Principal] = OrderedDict()

    @property
    def required(self) -> bool:
        """Whether callers must present a credential."""
        return self._token is not None or self.jwt is not None

    def authenticate(self, credential: object) -> Principal:
        """The principal of *credential*; raises :class:`Unauthorized` when it proves nothing.

        A verified JWT is remembered until its ``exp``, so a client that
        presents it again (HTTP, on every request) costs a dict lookup.
        """
        if not self.required:
            return ADMIN
        if not isinstance(credential, str) or not credential:
            raise Unauthorized("a valid auth token is required")
        # surrogatepass: a lone surrogate in a JSON string is a wrong token, not a crash.
        given = credential.encode("utf-8", "surrogatepass")
        if self._token is not None and hmac.compare_digest(given, self._token):
            return ADMIN
        if self.jwt is None:
            raise Unauthorized("a valid auth token is required")
        if len(credential) > MAX_TOKEN_LENGTH:
            raise Unauthorized(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
        cached = self._cache.get(credential)
        if cached is not None:
            if cached.expires_at is None or cached.expires_at > time.time():
                self._cache.move_to_end(credential)
                return cached
            del self._cache[credential]
        principal = self._decode(credential)
        self._cache[credential] = principal
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _decode(self, credential: str) -> Principal:
        assert self.jwt is not None
        settings = self.jwt
        try:
            claims = jwt.decode(
                credential,
                settings.key,
                algorithms=[settings.algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                options={"require": ["sub"]},
                leeway=CLOCK_SKEW,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token expired", hint="get a new one") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthorized(f"the token is not valid: {exc}"[:300]) from None
        exp = claims.get("exp")
        # PyJWT checked exp with the leeway, and that it is a number.
        if isinstance(exp, (int, float)) and exp <= time.time():
            raise Unauthorized("the token expired", hint="get a new one")
        return principal_of(claims)


def principal_of(claims: Mapping[str, Any]) -> Principal:
    """The principal of verified JWT *claims*; :class:`Unauthorized` for a malformed claim."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_ID_LENGTH:
        raise Unauthorized(f"the token's sub must be a string of 1 to {MAX_ID_LENGTH} characters")
    admin = claims.get("admin", False)
    if not isinstance(admin, bool):
        raise Unauthorized("the token's admin claim must be true or false")
    agent_id = claims.get("agent_id")
    if agent_id is not None and (not isinstance(agent_id, str) or not 0 < len(agent_id) <= MAX_ID_LENGTH):
        raise Unauthorized(f"the token's agent_id must be a string of 1 to {MAX_ID_LENGTH} characters")
    exp = claims.get("exp")
    try:
        expires_at = float(exp) if isinstance(exp, (int, float)) else None
    except OverflowError:  # an integer past any float: PyJWT takes it as a valid exp
        raise Unauthorized("the token's exp is out of range") from None
    return Principal(
        sub=sub,
        admin=admin,
        read=Grants.from_claim(claims, "read_sessions"),
        write=Grants.from_claim(claims, "sessions"),
        agent_id=agent_id,
        expires_at=expires_at,
    )


# -- the rules ----------------------------------------------------------------------------

Access = Literal["open", "read", "write", "admin", "own"]


@dataclass(frozen=True)
class Rule:
    """What an operation needs.

    ``access``: ``open`` (any authenticated caller), ``read`` or ``write`` (a
    grant for the session that ``field`` names, directly or through the
    record ``via`` says), ``admin``, or ``own``: the operation confines the
    caller itself (a listing filtered to the sessions it may read, a new
    session's id checked against its grants).
    """

    access: Access
    field: str | None = None
    via: Literal["session", "context", "task", "message"] = "session"

    def check(self, principal: Principal, values: Mapping[str, Any], lookup: Callable[[str, str], str]) -> None:
        """Raise :class:`Forbidden` unless *principal* may do this with the payload (or path) *values*.

        *lookup(via, id)* is the session of a context, task or message (it
        raises :class:`~chatmdb.errors.NotFound` for an unknown one).
        """
        if self.access in ("open", "own") or principal.admin:
            return
        if self.access == "admin":
            principal.check_admin("this operation")
            return
        value = values.get(self.field or "")
        if not isinstance(value, str):
            raise ChatMDBError(f"the rule names field {self.field!r}, which the operation lacks")
        if self.via == "session":
            if self.access == "read":
                principal.check_read(value)
            else:
                principal.check_write(value)
            return
        check_through(principal, self.access, self.via, value, lookup)


def check_through(
    principal: Principal, access: str, via: str, key: str, lookup: Callable[[str, str], str]
) -> None:
    """Raise :class:`Forbidden` unless *principal* has *access* to the session of the *via* record *key*.

    The record's session is the caller's business only if it may use it: an
    unknown record and one of a session the token does not grant get the
    same refusal, which names neither the session nor whether the record
    exists. A token whose grants cover every session learns nothing it could
    not read, and gets ``not_found`` for an unknown record.
    """
    covers_all = principal.reads_all if access == "read" else principal.admin or principal.write.everything
    try:
        session_id = lookup(via, key)
    except NotFound:
        if covers_all:
            raise
        session_id = None
    allowed = session_id is not None and (
        principal.can_read(session_id) if access == "read" else principal.can_write(session_id)
    )
    if not allowed:
        raise Forbidden(
            f"this token grants no {access} access to {via} {key!r:.80}, or there is no such {via}",
            hint="a token may reach only the records of the sessions it is granted",
        )


_READ_SESSION: Final = Rule("read", "session_id")
_WRITE_SESSION: Final = Rule("write", "session_id")

RULES: Final[Mapping[str, Rule]] = {
    "create_session": Rule("own"),  # a non-admin names the id, inside its write grants
    "join": _READ_SESSION,
    "leave": _READ_SESSION,
    "send_message": _WRITE_SESSION,  # and the message is stamped (Principal.stamp)
    "get_messages": _READ_SESSION,
    "list_sessions": Rule("own"),  # only the sessions the caller may read
    "get_session": _READ_SESSION,
    "list_agents": Rule("open"),
    "get_agent": Rule("open"),
    "create_context": _WRITE_SESSION,
    "update_context": Rule("write", "context_id", via="context"),
    "list_contexts": _READ_SESSION,
    "create_task": Rule("write", "context_id"),  # a task's context_id names its session
    "update_task": Rule("write", "task_id", via="task"),
    "get_task": Rule("read", "task_id", via="task"),
    "list_tasks": Rule("own"),  # a context_id needs a read grant; without one, only readable sessions' tasks
    "refresh": Rule("open"),  # the new token is checked by the event itself
}
"""The rule of every Socket.IO event; :mod:`.events` refuses to register an event without one."""

HTTP_RULES: Final[Mapping[str, Rule]] = {
    "list_sessions": RULES["list_sessions"],
    "create_session": RULES["create_session"],
    "get_session": _READ_SESSION,
    "get_session_messages": _READ_SESSION,
    "post_message": _WRITE_SESSION,
    "get_message": Rule("read", "message_uuid", via="message"),
    "list_agents": RULES["list_agents"],
    "get_agent": RULES["get_agent"],
    "metrics": Rule("admin"),
    "healthz": Rule("open"),  # needs no token at all
}
"""The rule of every HTTP route, by route name; :func:`.http.create_http_app` checks none is missing."""
