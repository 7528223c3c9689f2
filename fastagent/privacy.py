"""Personal data at rest: envelope encryption per call, at the store's one seam.

What is sealed (:data:`SEALED_FIELDS`): the fields of an event that can hold
personal data -- the caller's number, DTMF digits, transcripts, injected
messages, tool arguments and results, FSA slot values.  When an event is encoded
for the store, those fields are blanked in the stored JSON and their values go,
as one JSON object, into ``"_sealed"``: ``base64(nonce[12] || AES-256-GCM
ciphertext)`` under the call's data key, with the associated data
``call_id|seq|type`` (a sealed blob moved to another event does not open).
Every other field stays readable (analytics, listings, the engine's trail).

Keys (envelope encryption):

* a **data key** per call: 32 random bytes, created on the call's first sealed
  event, stored in the side table ``<events table>_keys`` only *wrapped*
  (AES-256-GCM under a master key, associated data ``fastagent-call-key|<call>``);
* **master keys** from ``FASTAGENT_MASTER_KEY`` (base64url, 32 bytes; several
  comma-separated: the first wraps, all unwrap -- rotation) or a key file
  ``FASTAGENT_MASTER_KEY_FILE`` (one key a line, first is current).  Without
  either, an SQLite store uses ``<store file>.key`` (created 0600 on first use)
  and a memory store a random key; PostgreSQL refuses to open without one.

Forgetting a call (:meth:`fastagent.store.EventStore.forget`) deletes its wrapped
key and keeps a tombstone (when, by whom): the log stays as written, and its
sealed fields can never be opened again.  Which categories are sealed is the
agent's choice (:class:`Privacy`, recorded in ``CallConfig.sealed``); tool data
is always sealed.  The cryptography is the ``cryptography`` package's AESGCM;
nothing here is home-made.  See docs/privacy.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fastagent.errors import StoreError

# What is personal data (the categories, the agent's choice) is defined in
# fastagent.personal_data, which agent definitions import without cryptography.
from fastagent.personal_data import (
    ALL_CATEGORIES,
    ALWAYS,
    CATEGORIES,
    SEALED_FIELDS,
    Privacy,
    fields_for,
)

__all__ = [
    "ALL_CATEGORIES",
    "CATEGORIES",
    "SEALED_FIELDS",
    "CallForgotten",
    "KeyError_",
    "MasterKeys",
    "Privacy",
    "Sealer",
]

ENV_KEY = "FASTAGENT_MASTER_KEY"
ENV_KEY_FILE = "FASTAGENT_MASTER_KEY_FILE"
NONCE = 12
SEALED_KEY = b'"_sealed":"'


class PrivacyError(StoreError):
    """Base: a call's personal data cannot be sealed or opened (one line)."""


class KeyError_(PrivacyError):  # noqa: N801 -- not the builtin KeyError
    """No master key, a bad one, or a data key that does not open."""


class CallForgotten(PrivacyError):
    """The call's data key was destroyed: its sealed fields are gone for good."""

    def __init__(self, call_id: str, at_us: int, by: str = "") -> None:
        from datetime import UTC, datetime

        when = datetime.fromtimestamp(at_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        who = f" by {by}" if by else ""
        super().__init__(
            f"call {call_id!r} was forgotten at {when}{who}: its personal data is gone"
        )
        self.call_id = call_id
        self.at_us = at_us
        self.by = by


# ---------------------------------------------------------------------- master keys


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"fastagent-master|" + key).hexdigest()[:12]


def _parse_key(text: str, where: str) -> bytes:
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise KeyError_(
            f"bad master key in {where}: expected 32 bytes in base64 "
            "(make one: python -c 'import secrets,base64; "
            "print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())')"
        )
    return key


def new_key_text() -> str:
    """A fresh master key as text (base64url of 32 random bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


class MasterKeys:
    """The master keys: the first wraps new data keys, every one unwraps (rotation)."""

    def __init__(self, keys: list[bytes], source: str) -> None:
        if not keys:
            raise KeyError_("no master key")
        self.source = source
        self._keys = {_key_id(k): AESGCM(k) for k in keys}
        self.current = _key_id(keys[0])

    @classmethod
    def from_text(cls, text: str, where: str) -> MasterKeys:
        parts = [p for line in text.splitlines() for p in line.split(",")]
        keys = [_parse_key(p, where) for p in parts if p.strip() and not p.strip().startswith("#")]
        if not keys:
            raise KeyError_(f"no master key in {where}")
        return cls(keys, where)

    @classmethod
    def from_file(cls, path: str) -> MasterKeys:
        try:
            with open(path, encoding="ascii") as f:
                return cls.from_text(f.read(), path)
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyError_(f"cannot read master key file {path}: {exc}") from None

    @classmethod
    def for_store(
        cls, kind: str, sqlite_path: str | None, env: Mapping[str, str] | None = None
    ) -> MasterKeys:
        """The master keys a store uses (see the module docs for the order)."""
        env = os.environ if env is None else env
        if env.get(ENV_KEY, "").strip():
            return cls.from_text(env[ENV_KEY], ENV_KEY)
        if env.get(ENV_KEY_FILE, "").strip():
            return cls.from_file(os.path.expanduser(env[ENV_KEY_FILE].strip()))
        if kind == "sqlite" and sqlite_path:
            return cls.from_file(ensure_key_file(sqlite_path + ".key"))
        if kind == "sqlite":
            return cls([secrets.token_bytes(32)], "a random key (memory store)")
        raise KeyError_(
            f"a PostgreSQL store needs a master key: set {ENV_KEY} or {ENV_KEY_FILE} "
            "(see docs/privacy.md)"
        )

    def wrap(self, call_id: str, data_key: bytes) -> tuple[str, bytes]:
        nonce = secrets.token_bytes(NONCE)
        aad = b"fastagent-call-key|" + call_id.encode()
        return self.current, nonce + self._keys[self.current].encrypt(nonce, data_key, aad)

    def unwrap(self, call_id: str, key_id: str, wrapped: bytes) -> bytes:
        aead = self._keys.get(key_id)
        if aead is None:
            raise KeyError_(
                f"call {call_id!r}: its data key is wrapped by master key {key_id}, "
                f"which {self.source} does not hold"
            )
        try:
            aad = b"fastagent-call-key|" + call_id.encode()
            return aead.decrypt(wrapped[:NONCE], wrapped[NONCE:], aad)
        except (InvalidTag, ValueError):
            raise KeyError_(f"call {call_id!r}: its data key does not open (corrupt)") from None

    def holds(self, key_id: str) -> bool:
        return key_id in self._keys


def ensure_key_file(path: str) -> str:
    """Create ``path`` with a fresh master key (mode 0600) unless it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    except OSError as exc:
        raise KeyError_(f"cannot create master key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(
            "# FastAgent master key (docs/privacy.md). Keep it apart from the store's\n"
            "# backups: whoever holds both can read every call not yet forgotten.\n"
        )
        f.write(new_key_text() + "\n")
    return path


# ---------------------------------------------------------------------- sealing


class _SealedOnly(msgspec.Struct):
    sealed: str = msgspec.field(default="", name="_sealed")


_sealed_decoder = msgspec.json.Decoder(_SealedOnly)
_json = msgspec.json.Encoder()
_BLANKS: dict[str, Any] = {"parameters": {}, "history": ()}


def _aad(call_id: str, seq: int, type_name: str) -> bytes:
    return f"{call_id}|{seq}|{type_name}".encode()


KeySource = Callable[[str, bool], "AESGCM | None"]


class Sealer:
    """Seals and opens event bodies with per-call data keys.

    ``keys(call_id, create)`` returns the call's AESGCM (creating the key if
    ``create``), None if the call has no key, or raises :class:`CallForgotten`.
    ``policy`` remembers each call's sealed categories (from its SessionInitiated);
    a call whose start this process has not seen seals everything.
    """

    def __init__(self, keys: KeySource) -> None:
        self._keys = keys
        self._policy: dict[str, dict[str, tuple[str, ...]]] = {}

    def learn(self, event: Any) -> None:
        """Note a call's policy from its SessionInitiated (encoded or decoded)."""
        config = getattr(event, "config", None)
        cats = getattr(config, "sealed", None)
        if cats is not None:
            self._policy[event.call_id] = fields_for(tuple(cats) + ALWAYS)

    def end(self, call_id: str) -> None:
        self._policy.pop(call_id, None)

    def fields_of(self, call_id: str, type_name: str) -> tuple[str, ...]:
        policy = self._policy.get(call_id)
        if policy is None:
            return SEALED_FIELDS.get(type_name, ())
        return policy.get(type_name, ())

    def seal(self, event: Any, encoded: bytes | None = None) -> bytes:
        """The stored body of ``event``: its JSON with personal fields sealed."""
        type_name = type(event).__name__
        if type_name == "SessionInitiated":
            self.learn(event)
        names = self.fields_of(event.call_id, type_name)
        values = {n: getattr(event, n) for n in names}
        values = {n: v for n, v in values.items() if v}
        if not values:
            return encoded if encoded is not None else _json.encode(event)
        aead = self._keys(event.call_id, True)
        assert aead is not None  # create=True
        blank = msgspec.structs.replace(event, **{n: _BLANKS.get(n, "") for n in values})
        nonce = secrets.token_bytes(NONCE)
        plain = _json.encode(values)
        sealed = nonce + aead.encrypt(nonce, plain, _aad(event.call_id, event.seq, type_name))
        body = _json.encode(blank)
        return body[:-1] + b',"_sealed":"' + base64.b64encode(sealed) + b'"}'

    def open(
        self, call_id: str, seq: int, type_name: str, state: bytes, *, forgotten: str = "raise"
    ) -> bytes:
        """``state`` with its sealed fields restored (unchanged if none are sealed).

        ``forgotten``: "raise" (:class:`CallForgotten`) or "blank" (leave the sealed
        fields blank, e.g. to list calls or follow the log for analytics).
        Raises KeyError_ for a blob that does not open.
        """
        if type_name not in SEALED_FIELDS or SEALED_KEY not in state:
            return state
        try:
            token = _sealed_decoder.decode(state).sealed
        except (msgspec.DecodeError, msgspec.ValidationError):
            return state  # not ours to judge: the event decoder reports corrupt JSON
        if not token:
            return state
        try:
            aead = self._keys(call_id, False)
        except CallForgotten:
            if forgotten == "blank":
                return state
            raise
        if aead is None:
            if forgotten == "blank":
                return state
            raise KeyError_(f"call {call_id!r}: no data key in this store for its sealed fields")
        try:
            blob = base64.b64decode(token, validate=True)
            plain = aead.decrypt(blob[:NONCE], blob[NONCE:], _aad(call_id, seq, type_name))
            values = msgspec.json.decode(plain)
            raw = msgspec.json.decode(state)
        except (InvalidTag, ValueError, binascii.Error, msgspec.DecodeError):
            raise KeyError_(
                f"call {call_id!r} seq {seq}: sealed fields do not open (corrupt or moved)"
            ) from None
        if not isinstance(values, dict) or not isinstance(raw, dict):
            raise KeyError_(f"call {call_id!r} seq {seq}: sealed fields are not an object")
        raw.pop("_sealed", None)
        raw.update(values)
        return _json.encode(raw)


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
