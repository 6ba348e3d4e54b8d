"""Time-sortable ids: a node or event made later sorts after one made earlier.

26 characters of Crockford base32 (as ULIDs): 48 bits of milliseconds since 1970, then 80 random
bits. Within one process the random part counts up when two ids share a millisecond, so ids
made in sequence also sort in sequence.
"""

from __future__ import annotations

import os
import threading
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last = [0, 0]  # the last (milliseconds, random) handed out


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        out.append(ALPHABET[digit])
    return "".join(reversed(out))


def new_id() -> str:
    """A fresh 26-character id that sorts by creation time."""
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last[0]:
            ms, rand = _last[0], _last[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
        _last[0], _last[1] = ms, rand
    return _encode(ms, 10) + _encode(rand, 16)


def id_time(value: str) -> float:
    """Seconds since 1970 encoded in an id."""
    ms = 0
    for ch in value[:10]:
        ms = ms * 32 + ALPHABET.index(ch)
    return ms / 1000
