"""Seeded, reproducible serial-link faults for a good frame (for fault injection against a board).

:func:`make_faults` returns ``(kind, bytes)`` pairs; kinds: ``bitflip`` (1-3 flipped bits anywhere),
``drop`` (a byte removed), ``duplicate`` (a byte repeated), ``truncate`` (the frame cut short),
``garbage`` (random bytes, then the intact frame), ``wrong_length`` (length field off, CRC recomputed so
only the length check can catch it), ``bad_opcode`` (unknown opcode, CRC recomputed).
"""

from __future__ import annotations

import random
import struct

from ..sw.link import frames

__all__ = ["KINDS", "make_faults"]

KINDS = ("bitflip", "drop", "duplicate", "truncate", "garbage", "wrong_length", "bad_opcode")


def _reframe(opcode, length, payload):
    body = bytes([opcode]) + struct.pack("<H", length) + payload
    return bytes([frames.SYNC]) + body + struct.pack("<H", frames.crc16(body))


def make_faults(opcode: int, payload: bytes, count: int, seed: int = 0):
    rng = random.Random(seed)
    good = frames.encode_frame(opcode, payload)
    out = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        data = bytearray(good)
        if kind == "bitflip":
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
        elif kind == "drop":
            del data[rng.randrange(len(data))]
        elif kind == "duplicate":
            pos = rng.randrange(len(data))
            data.insert(pos, data[pos])
        elif kind == "truncate":
            data = data[:rng.randrange(1, len(data))]
        elif kind == "garbage":
            data = bytearray(rng.randrange(256) for _ in range(rng.randint(1, 40))) + data
        elif kind == "wrong_length":
            delta = rng.choice([-3, -1, 1, 2, 64, 1000])
            data = bytearray(_reframe(opcode, max(0, len(payload) + delta) & 0xFFFF, payload))
        elif kind == "bad_opcode":
            data = bytearray(_reframe(rng.choice([0x00, 0x04, 0x42, 0x7E, 0x81]), len(payload), payload))
        out.append((kind, bytes(data)))
    return out
