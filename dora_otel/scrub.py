"""The scrubbing policy: what counts as a credential and how it is masked, in one place.

Every boundary where data leaves the process or reaches disk calls this module: JSON log lines and
OTLP log records (logs.py, on the log writer thread), spans (tracing.ScrubbingSpanExporter, on the
export thread), ledger records (ledger/records.py, where records are built) and the CLI's output.
The rules (also listed in the README, "Scrubbing"):

1. **Known secret values**, masked wherever they appear: values given to `setup(secrets=[...])` /
   `register_secrets()`, and by default the values of `KALSHI_API_KEY_ID`, `KALSHI_API_KEY`,
   `KALSHI_KEY_ID`, `KALSHI_PRIVATE_KEY` (PEM text, or a path: then the file's contents), the
   contents of the file named by `KALSHI_PRIVATE_KEY_PATH`, `AWS_SECRET_ACCESS_KEY` and
   `AWS_SESSION_TOKEN` (`SECRET_ENV_VARS`).
2. **Sensitive field names** (`is_sensitive_key`): password, secret, token (not "tokens"), api key,
   private key, access key, key id, a field named just "key", signature / sig, authorization / auth,
   cookie, credential, session, the Kalshi headers KALSHI-ACCESS-KEY and KALSHI-ACCESS-SIGNATURE;
   any spelling (snake, kebab, camel, dotted). Their values are masked as dict keys at any depth
   and as `name=value`, `name: value`, `"name": "value"` in text. Numbers and booleans under such
   a name are kept (`session_count: 3` is not a credential).
3. **Value shapes**: PEM private-key blocks (also their `repr` with `\\n` escapes, and a block cut
   short), `Bearer <token>`, a 40-character AWS secret-key shape next to an AWS key label, and
   base64 runs of 60+ characters mixing upper case, lower case and digits (signatures, key bodies).

Identifiers are never touched: UUIDs, hex trace/span/decision ids, client_order_id, order_id.
They have no sensitive label and none of the masked shapes (hex is lower-case only; UUIDs have
dashes), and the tests pin that.

Cost: a string with none of the trigger words, no registered secret and shorter than 60
characters costs one `lower()` and a few substring tests; `scrub_record` checks a whole flat
record as one joined string, so a clean ledger record costs ~1-2 us on the thread that builds it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[REDACTED]"

#: Environment variables whose values are registered as known secrets by `setup()`.
SECRET_ENV_VARS = ("KALSHI_API_KEY_ID", "KALSHI_API_KEY", "KALSHI_KEY_ID", "KALSHI_PRIVATE_KEY",
                   "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
#: Environment variables naming a key file whose contents are registered as a known secret
#: (KALSHI_PRIVATE_KEY too when it holds a path rather than the PEM text).
SECRET_FILE_ENV_VARS = ("KALSHI_PRIVATE_KEY_PATH", "KALSHI_PRIVATE_KEY")
_MIN_SECRET_LEN = 6  # shorter values would mask ordinary words and numbers
_MAX_KEY_FILE_BYTES = 64 * 1024

# Lower-case substrings at least one of which any masked text contains (labels and shapes).
_TRIGGERS = ("pass", "pwd", "secret", "token", "key", "sig", "auth", "cookie", "credential",
             "session", "bearer", "-----begin", "jwt")
_BLOB_MIN = 60

_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()

# ----------------------------------------------------------------------------- field names
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")
_WORDS = frozenset({
    "password", "passwd", "passphrase", "passcode", "pwd", "secret", "secrets", "signature",
    "signatures", "sig", "authorization", "auth", "authentication", "cookie", "cookies",
    "credential", "credentials", "session", "sessionid", "sessiontoken", "sessionkey", "token",
    "jwt", "bearer", "apikey", "privatekey", "accesskey", "secretkey", "signingkey", "keyid",
})
_SUFFIXES = ("token", "secret", "password", "passwd", "signature", "cookie", "apikey", "privatekey")
_KEY_QUALIFIERS = frozenset({"api", "private", "access", "secret", "signing", "kalshi", "auth",
                             "client", "encryption", "ssh", "master", "x"})
_key_cache: dict[str, bool] = {}


def is_sensitive_key(name: Any) -> bool:
    """True when a field called `name` holds a credential (rule 2 of the module docstring)."""
    if type(name) is not str:
        return False
    cached = _key_cache.get(name)
    if cached is None:
        cached = _classify(name)
        if len(_key_cache) > 10_000:  # bounded: hostile bots may invent keys without end
            _key_cache.clear()
        _key_cache[name] = cached
    return cached


def _classify(name: str) -> bool:
    parts = [p for p in _SPLIT.split(_CAMEL.sub(r"\1_\2", name).lower()) if p]
    if parts == ["key"]:
        return True
    for i, part in enumerate(parts):
        if part in _WORDS or part.endswith(_SUFFIXES) or "secret" in part or "passw" in part:
            return True
        if part == "key" and ((i > 0 and parts[i - 1] in _KEY_QUALIFIERS)
                              or (i + 1 < len(parts) and parts[i + 1] == "id")):
            return True
    return False


def _masks(value: Any) -> bool:
    """Numbers, booleans and None under a sensitive name are kept (counters, flags)."""
    return value is not None and type(value) not in (bool, int, float)


# ----------------------------------------------------------------------------- known secrets
def register_secrets(values: Iterable[Any]) -> None:
    """Add exact secret values to mask everywhere (any thread). Values shorter than 6 characters
    are ignored: masking them would destroy ordinary text. A multi-line value (a PEM key file) is
    registered whole and also in its `repr` form (newlines as `\\n`)."""
    new = set()
    for value in values:
        if value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
        text = text.strip()
        if len(text) < _MIN_SECRET_LEN:
            continue
        new.add(text)
        if "\n" in text:  # (its 64-character body lines are caught by the base64 shape rule)
            new.add(text.replace("\r", "").replace("\n", "\\n"))
    global _secrets
    with _secrets_lock:
        # Longest first, so a value containing another is masked whole.
        _secrets = tuple(sorted(set(_secrets) | new, key=len, reverse=True))
        _seen_clean.clear()
        _event_verdicts.clear()


def secrets_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The known secrets of rule 1 found in `environ` (default os.environ); the key file named by
    KALSHI_PRIVATE_KEY_PATH (or KALSHI_PRIVATE_KEY, when it is a path) is read (up to 64 KiB).
    Never raises."""
    environ = os.environ if environ is None else environ
    found = [environ[name] for name in SECRET_ENV_VARS if environ.get(name)]
    for name in SECRET_FILE_ENV_VARS:
        path = environ.get(name)
        if not path or "-----BEGIN" in path or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as fh:
                found.append(fh.read(_MAX_KEY_FILE_BYTES).decode("utf-8", "replace"))
        except OSError:
            pass
    return found


def registered_secrets() -> tuple[str, ...]:
    return _secrets


def clear_secrets() -> None:
    """Forget every registered secret (tests)."""
    global _secrets
    with _secrets_lock:
        _secrets = ()
        _seen_clean.clear()
        _event_verdicts.clear()


# ----------------------------------------------------------------------------- text
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL)
_PEM_MASK = "-----BEGIN PRIVATE KEY-----" + MASK + "-----END PRIVATE KEY-----"
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{8,}=*")
# A label and its separator; the label is judged by is_sensitive_key, then the value read after it.
_LABEL = re.compile(r"(?P<label>[A-Za-z_][A-Za-z0-9_.\-]{0,80})(?P<sep>[\"']?[ \t]*[:=][ \t]*)")
_VALUE = re.compile(r"\"[^\"\n]*\"?|'[^'\n]*'?|(?:(?i:bearer|basic|token|digest)[ \t]+)?[^\s,;&\"'<>{}\[\]()]+")
_AWS = re.compile(r"(?i)(aws[a-z_\- ]{0,30}(?:secret|key)[a-z_\- ]{0,30}[\s:=\"']{1,4})"
                  r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")
# The lookbehind makes a search linear: inside a short run it fails at once instead of rescanning.
_BLOB = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{" + str(_BLOB_MIN) + r",}={0,2}")


def _mask_labeled(text: str) -> str:
    """Mask the value after every sensitive `label=` / `label:` in `text` (quoted values keep their
    quotes). A label that is not sensitive consumes nothing past its separator, so the next label
    in `failed: KALSHI-ACCESS-SIGNATURE: ...` is still seen."""
    out: list[str] = []
    pos = 0
    for match in _LABEL.finditer(text):
        if match.start() < pos or not is_sensitive_key(match.group("label")):
            continue
        value = _VALUE.match(text, match.end())
        if value is None:
            continue
        raw = value.group(0)
        quote = raw[0] if raw[0] in "'\"" else ""
        closed = quote and len(raw) > 1 and raw.endswith(quote)
        out.append(text[pos:match.end()])
        out.append(quote + MASK + (quote if closed else ""))
        pos = value.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _blob(match: re.Match[str]) -> str:
    run = match.group(0)
    if any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run):
        return MASK
    return run


def _has_trigger(text: str) -> bool:
    if _trigger_word(text.lower()):
        return True
    for secret in _secrets:  # noqa: SIM110  (a loop, not any() over a generator: every line and span asks)
        if secret in text:
            return True
    return False


def _trigger_word(low: str) -> bool:
    """`any(word in low for word in _TRIGGERS)`, unrolled: every line and span of the event thread
    asks (a third cheaper than the loop; tests/safety pins that it lists `_TRIGGERS`)."""
    return ("pass" in low or "pwd" in low or "secret" in low or "token" in low or "key" in low or "sig" in low
            or "auth" in low or "cookie" in low or "credential" in low or "session" in low or "bearer" in low
            or "-----begin" in low or "jwt" in low)


def _has_blob(text: str) -> bool:
    if text.lower() == text or text.upper() == text:  # a blob mixes cases: hex ids and hashes never do
        return False
    return any(_blob(match) is MASK for match in _BLOB.finditer(text))


def needs_scrub(text: str) -> bool:
    """Cheap test: could `text` contain anything the rules mask?"""
    return _has_trigger(text) or (len(text) >= _BLOB_MIN and _has_blob(text))


def scrub_text(text: str) -> str:
    """`text` with every credential the rules find replaced by [REDACTED]. Any thread; never raises
    for a str (a non-str is returned unchanged)."""
    if type(text) is not str or not text or not needs_scrub(text):
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "-----BEGIN" in text:
        text = _PEM.sub(_PEM_MASK, text)
    text = _BEARER.sub(r"\1" + MASK, text)
    text = _mask_labeled(text)
    text = _AWS.sub(r"\1" + MASK, text)
    if len(text) >= _BLOB_MIN:
        text = _BLOB.sub(_blob, text)
    return text


# ----------------------------------------------------------------------------- structures
_MAX_DEPTH = 32


def scrub_value(obj: Any, _depth: int = 0) -> Any:
    """A scrubbed copy of `obj`: strings by `scrub_text`, dicts also by key name (a sensitive key's
    non-numeric value becomes [REDACTED], whole), lists and tuples element-wise, bytes decoded.
    Other objects are returned as they are (callers turn them into text first when they may carry
    a secret). Recursion is cut at depth 32. Any thread."""
    kind = type(obj)
    if kind is str:
        return scrub_text(obj)
    if obj is None or kind in (int, float, bool):
        return obj
    if _depth > _MAX_DEPTH:
        return "[too deep]"
    if isinstance(obj, dict):
        return {(scrub_text(k) if type(k) is str else k):
                (MASK if is_sensitive_key(k) and _masks(v) else scrub_value(v, _depth + 1))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_value(v, _depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(scrub_value(v, _depth + 1) for v in obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return scrub_text(bytes(obj).decode("utf-8", "backslashreplace"))
    if isinstance(obj, str):  # a str subclass: scrubbed as the plain text it writes as
        return scrub_text(str.__str__(obj))
    return obj


def scrub_field(key: Any, value: Any) -> Any:
    """The value to keep for field `key`: [REDACTED] under a sensitive name, else scrub_value."""
    if is_sensitive_key(key) and _masks(value):
        return MASK
    return scrub_value(value)


# Fields of a ledger record whose values dora-otel itself sets (ids, times) after the event's own
# fields are merged in: scrub_record does not scan them, which keeps a clean record at ~1 us.
TRUSTED_FIELDS = frozenset({
    "bot_run_id", "env", "bot_version", "event_ts", "trace_id", "span_id", "decision_id", "expires_at",
    "event_id", "kind", "event_type", "seq", "decision_ts", "decision_day", "execution_log_partition",
})


def scrub_record(record: dict[str, Any], trusted: frozenset[str] = TRUSTED_FIELDS) -> dict[str, Any]:
    """Scrub a record (a ledger row) in place and return it.

    Fast path for the thread that builds it: keys are checked against the (cached) name rule and
    the strings of fields dora-otel does not generate itself are tested as one joined string; only
    a record that may hold a credential is walked value by value.
    """
    texts: list[str] = []
    longest = _collect(record, texts, 0, trusted)
    if longest >= 0 and texts_clean(texts, longest):
        return record
    for key, value in list(record.items()):
        if key not in trusted:
            record[key] = scrub_field(key, value)
    return record


def _collect(obj: Any, texts: list[str], depth: int, trusted: frozenset[str]) -> int:
    """Gather the untrusted strings of a record of dicts/lists into `texts`; returns the longest
    length, or -1 when a sensitive key holds a value (or the structure is odd): slow path."""
    if depth > 4:
        return -1
    longest = 0
    for key, value in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
        if key in trusted and depth == 0:
            continue
        if type(key) is str and key not in _seen_clean:
            texts.append(key)
            if len(key) > longest and key.lower() != key and key.upper() != key:
                longest = len(key)  # (a nested key is text too: a base64 run there is masked)
        kind = type(value)
        if kind is str:
            if is_sensitive_key(key):
                return -1
            if value in _seen_clean:
                continue
            texts.append(value)
            if len(value) > longest and value.lower() != value and value.upper() != value:
                longest = len(value)  # (only a mixed-case string can hold a base64 blob)
        elif kind in (int, float, bool) or value is None:
            pass
        elif kind in (dict, list, tuple):
            if is_sensitive_key(key):
                return -1
            inner = _collect(value, texts, depth + 1, trusted)
            if inner < 0:
                return -1
            longest = max(longest, inner)
        else:
            return -1
    return longest


# Strings (field names and values: markets, sides, ids) a clean record held: scrub_record skips them
# next time (an order's ids recur in its place, result, cancel and fill records). Bounded; cleared
# when a secret is registered.
_seen_clean: dict[str, None] = {}


def texts_clean(texts: list[str], longest: int) -> bool:
    """The test `scrub_record` makes on a record's untrusted strings: True when none of `texts`
    can hold anything the rules mask (one joined test; `longest` bounds the length of a mixed-case
    text, 0 when none can hold a base64 run). Clean texts are remembered in `known_clean`.

    For callers that gather a flat record's strings while they encode it (the log writer): a
    record whose untrusted values are str / int / float / bool / None, whose str values pass this
    test (or are in `known_clean`) and none of which sits under a sensitive key is one that
    `scrub_record` returns unchanged."""
    joined = "\x00".join(texts)
    if _has_trigger(joined) or (longest >= _BLOB_MIN and _has_blob(joined)):
        return False
    if len(_seen_clean) > 4096:
        _seen_clean.clear()
    _seen_clean.update(dict.fromkeys(texts))
    return True


#: Strings a clean record held (read-only for callers; see `texts_clean`).
known_clean = _seen_clean


#: Field names known not to be sensitive (`ordinary_key`), for the encoders of the log writer
#: thread: one set lookup per field. Read-only for callers.
ordinary_keys: set[str] = set()


def ordinary_key(key: Any) -> bool:
    """True (and remembered in `ordinary_keys`) when `key` is a str and not a sensitive name
    (`is_sensitive_key`, whose answer for a name never changes)."""
    if type(key) is not str or is_sensitive_key(key):
        return False
    if len(ordinary_keys) > 10_000:  # bounded, like the name cache
        ordinary_keys.clear()
    ordinary_keys.add(key)
    return True


# ----------------------------------------------------------------------------- an event's fields
_I64_MIN, _I64_MAX = -(2**63), 2**63
_NO_NONES: tuple[str, ...] = ()
#: Fields dora-otel itself sets on an event, trusted (not scanned) by both the JSON line encoder and
#: the span encoder: `event_verdict` does not test their str values either.
EVENT_TRUSTED = frozenset({"bot_run_id", "env", "bot_version", "trace_id", "span_id", "event_type", "seq"})
# Event dicts found clean, by id, with the dict itself (so the id cannot be reused while the entry
# lives) and its None-valued keys. Bounded; cleared when a secret is registered.
_event_verdicts: dict[int, tuple[Mapping[str, Any], tuple[str, ...]]] = {}


def event_verdict(fields: Mapping[str, Any], remember: bool = False,
                 also: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """One verdict on an event's fields for the encoders of the log writer thread (its JSON line,
    its span): the keys whose value is None (empty tuple: none) when nothing in `fields` (nor in
    the strings `also`: a line's message) can be masked, else None (then the caller scrubs the
    general way).

    Clean means: every key is a str; every value is None, bool, a 64-bit signed int, a finite
    float, a str, or a list of dicts ("rows": a decision's targets) whose keys are str and values
    None / bool / 64-bit int / finite float / str; no str (nor a list) sits under a sensitive name,
    at the top or in a row; and the strings (values, row keys) pass `texts_clean` or are
    `known_clean`, except the values of `EVENT_TRUSTED` fields. Then `scrub_record` (with a trusted
    set holding `EVENT_TRUSTED`) returns such a record unchanged and `scrub_value` returns equal
    copies of its values: the caller may write them as they are. (Top-level keys are never
    rewritten by the policy, so they are not tested as text.)

    `remember`: keep the fields' verdict for this very dict (by identity), so the event's line and
    its span (which share one dict that nobody changes once queued) test it once. Only for such
    dicts."""
    known = _seen_clean
    if remember:
        entry = _event_verdicts.get(id(fields))
        if entry is not None and entry[0] is fields:
            if also:
                new = [text for text in also if text not in known]
                if new and not texts_clean(new, max(map(len, new))):
                    return None
            return entry[1]
    ordinary = ordinary_keys
    new = []
    for text in also:  # (a loop, not a comprehension: no function call of its own on 3.11)
        if text not in known:
            new.append(text)
    nones: list[str] = []
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            if key in EVENT_TRUSTED:
                continue
            if key not in ordinary and not ordinary_key(key):
                return None
            if value not in known:
                new.append(value)
        elif kind is int:  # (the literals are -2**63 and 2**63: constants, not global lookups)
            if not -9223372036854775808 <= value < 9223372036854775808 or type(key) is not str:
                return None
        elif kind is float:
            if value - value != 0 or type(key) is not str:  # (nan and inf give nan)
                return None
        elif value is None:
            if type(key) is not str:
                return None
            nones.append(key)
        elif kind is bool:
            if type(key) is not str:
                return None
        elif kind is list:
            if (key not in ordinary and not ordinary_key(key)) or not _rows_clean(value, new):
                return None
        else:
            return None
    if new and not texts_clean(new, max(map(len, new))):
        return None  # (not remembered: the fields may be clean and `also` not)
    verdict = tuple(nones) if nones else _NO_NONES
    if remember:
        if len(_event_verdicts) > 256:
            _event_verdicts.clear()
        _event_verdicts[id(fields)] = (fields, verdict)
    return verdict


def _rows_clean(rows: list[Any], new: list[str]) -> bool:
    """`event_verdict` for a list of flat dicts: True when it holds nothing but rows of plain values
    with no str under a sensitive name; their strings not known clean are added to `new`."""
    known = _seen_clean
    for row in rows:
        if type(row) is not dict:
            return False
        for key, value in row.items():
            if type(key) is not str:
                return False
            if key not in known:
                new.append(key)
            kind = type(value)
            if kind is str:
                if key not in ordinary_keys and not ordinary_key(key):
                    return False
                if value not in known:
                    new.append(value)
            elif kind is int:
                if not _I64_MIN <= value < _I64_MAX:
                    return False
            elif kind is float:
                if value - value != 0:
                    return False
            elif value is not None and kind is not bool:
                return False
    return True


_SCALARS = frozenset({int, float, bool, type(None)})


def fields_clean(fields: Mapping[str, Any]) -> bool:
    """True when the policy has nothing to mask in `fields`: every key and every string value, at
    any depth, is clean text (a sensitive field name always contains a trigger word, so it is never
    clean). Values must be str/int/float/bool/None, or lists/tuples/dicts of them; anything else, and
    nesting deeper than 4, answers False (unsure: the caller scrubs the slow way). Does not modify
    `fields`.

    For the thread that journals a ledger event straight from the decorator's fields (~0.5 us for
    an order's): keys and strings seen clean before (`_seen_clean`, shared with scrub_record) are
    not tested again; the rest are tested as one joined string (`texts_clean`, as scrub_record).
    A sensitive name is never remembered clean, so a key found in the cache is not one."""
    texts: list[str] = []
    if not _gather(fields, texts, 0):
        return False
    return not texts or texts_clean(texts, max(map(len, texts)))


def _gather(obj: Mapping[Any, Any], texts: list[str], depth: int) -> bool:
    """Collect `obj`'s keys and strings not seen clean into `texts`; False for what fields_clean
    cannot judge."""
    if depth > 4:
        return False
    if not obj.keys() <= _seen_clean.keys():
        for key in obj:
            if type(key) is not str:
                return False
            if key not in _seen_clean:
                texts.append(key)
    return _gather_items(obj.values(), texts, depth)


def _gather_items(values: Iterable[Any], texts: list[str], depth: int) -> bool:
    seen, scalars = _seen_clean, _SCALARS  # (locals: this loop runs for every value of every ledger record)
    for value in values:  # (a plain loop: cheaper than a set difference for ~10 values)
        kind = type(value)
        if kind is str:
            if value not in seen:
                texts.append(value)
        elif kind in scalars:  # (numbers and None, the usual non-text values, before the containers)
            continue
        elif kind is dict:
            if not _gather(value, texts, depth + 1):
                return False
        elif kind is list or kind is tuple:
            if depth >= 4 or not _gather_items(value, texts, depth + 1):
                return False
        else:
            return False
    return True
