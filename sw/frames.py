"""The serial-link protocol, defined once: gateware (``hw/hostlink.py``), driver and tests import it.

Frame (all multi-byte fields little-endian)::

    SYNC (0xA5) | opcode (1) | length (2) | payload (length bytes) | CRC-16 (2)

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR)
over opcode, length and payload. Requests and their responses (response opcode = request | 0x80):

=========  ======  =====================================  ============================================
request    opcode  request payload                        response payload
=========  ======  =====================================  ============================================
IDENTIFY   0x01    none                                   :data:`IDENTIFY_FIELDS` (20 bytes), then one
                                                          byte L and L layer records (:data:`LAYER_FIELDS`)
INFER      0x02    B x ``input_count`` codes, 1 byte each  B x (``output_count`` values of ``output_bytes``
                   (two's complement; binary: 1 = +1)      bytes, then 1 byte argmax)
COUNTERS   0x03    none                                   cycles of the last INFER (4), MAC cycles (4),
                                                          frames received (2), errors (2)
=========  ======  =====================================  ============================================

A bad frame is answered with ``ERROR`` (0xFF) and a one-byte code: :data:`BAD_CRC`, :data:`BAD_LENGTH`
(not 0 for IDENTIFY/COUNTERS, not a whole batch of 1..``max_batch`` inputs for INFER), :data:`BAD_OPCODE`,
:data:`TIMEOUT` (a frame stopped arriving for ``timeout`` byte times; the partial frame is dropped).
After any error the receiver hunts for the next SYNC byte, so garbage between frames is skipped.
Example — IDENTIFY request: ``a5 01 00 00 ac fb`` (CRC over ``01 00 00`` is 0xFBAC).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import LowbitError

__all__ = ["SYNC", "IDENTIFY", "INFER", "COUNTERS", "ERROR", "RESPONSE", "BAD_CRC", "BAD_LENGTH", "BAD_OPCODE",
           "TIMEOUT", "ERROR_NAMES", "IDENTIFY_FIELDS", "LAYER_FIELDS", "crc16", "encode_frame", "FrameParser", "Identity",
           "pack_inputs", "unpack_outputs", "HEADER_BYTES", "OVERHEAD_BYTES"]

SYNC = 0xA5
IDENTIFY, INFER, COUNTERS = 0x01, 0x02, 0x03
RESPONSE = 0x80
ERROR = 0xFF
BAD_CRC, BAD_LENGTH, BAD_OPCODE, TIMEOUT = 1, 2, 3, 4
ERROR_NAMES = {BAD_CRC: "bad CRC", BAD_LENGTH: "bad length", BAD_OPCODE: "unknown opcode", TIMEOUT: "timeout"}
HEADER_BYTES = 4       # sync, opcode, length
OVERHEAD_BYTES = 6     # header + CRC

#: IDENTIFY response fields, in order: (name, struct format).
IDENTIFY_FIELDS = (("magic", "4s"), ("version", "B"), ("config_hash", "I"), ("input_count", "H"),
                   ("output_count", "H"), ("output_bytes", "B"), ("input_bits", "B"), ("input_signed", "B"),
                   ("input_binary", "B"), ("max_batch", "B"), ("output_signed", "B"))
_IDENTIFY_STRUCT = "<" + "".join(f for _, f in IDENTIFY_FIELDS)
#: One compute layer in the IDENTIFY response: kind (1 Dense, 2 Conv2d), K, N, input bits, weight bits,
#: output bits (0 for integer logits), binary flag, array rows and columns.
LAYER_FIELDS = (("kind", "B"), ("k", "H"), ("n", "H"), ("in_bits", "B"), ("weight_bits", "B"),
                ("out_bits", "B"), ("binary", "B"), ("rows", "B"), ("cols", "B"))
_LAYER_STRUCT = "<" + "".join(f for _, f in LAYER_FIELDS)
MAGIC = b"LWBT"
PROTOCOL_VERSION = 1


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE. ``crc16(b"123456789") == 0x29B1`` (the standard check value)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def encode_frame(opcode: int, payload: bytes = b"") -> bytes:
    body = bytes([opcode]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([SYNC]) + body + struct.pack("<H", crc16(body))


class FrameParser:
    """Incremental host-side parser: feed bytes, collect ``(opcode, payload)`` of good frames.

    Frames with a bad CRC are counted in ``errors`` and skipped (the parser hunts for the next SYNC).
    """

    def __init__(self, max_payload: int = 65535):
        self.buf = bytearray()
        self.max_payload = max_payload
        self.errors = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        frames = []
        while True:
            start = self.buf.find(bytes([SYNC]))
            if start < 0:
                self.buf.clear()
                return frames
            del self.buf[:start]
            if len(self.buf) < HEADER_BYTES:
                return frames
            length = struct.unpack_from("<H", self.buf, 2)[0]
            if length > self.max_payload:
                self.errors += 1
                del self.buf[:1]
                continue
            if len(self.buf) < OVERHEAD_BYTES + length:
                return frames
            body = bytes(self.buf[1:HEADER_BYTES + length])
            (crc,) = struct.unpack_from("<H", self.buf, HEADER_BYTES + length)
            if crc16(body) != crc:
                self.errors += 1
                del self.buf[:1]
                continue
            frames.append((body[0], body[3:]))
            del self.buf[:OVERHEAD_BYTES + length]


@dataclass(frozen=True)
class Identity:
    """What a board says about the network it runs (the IDENTIFY response)."""

    config_hash: int
    input_count: int
    output_count: int
    output_bytes: int
    input_bits: int
    input_signed: bool
    input_binary: bool
    max_batch: int
    output_signed: bool = True
    layers: tuple = ()      # one dict per compute layer, keys of LAYER_FIELDS

    def pack(self) -> bytes:
        head = struct.pack(_IDENTIFY_STRUCT, MAGIC, PROTOCOL_VERSION, self.config_hash, self.input_count,
                           self.output_count, self.output_bytes, self.input_bits, int(self.input_signed),
                           int(self.input_binary), self.max_batch, int(self.output_signed))
        return head + bytes([len(self.layers)]) + b"".join(
            struct.pack(_LAYER_STRUCT, *(int(layer[n]) for n, _ in LAYER_FIELDS)) for layer in self.layers)

    @classmethod
    def unpack(cls, payload: bytes) -> "Identity":
        head = struct.calcsize(_IDENTIFY_STRUCT)
        per = struct.calcsize(_LAYER_STRUCT)
        if len(payload) < head + 1 or len(payload) != head + 1 + payload[head] * per:
            raise LowbitError(f"IDENTIFY response has {len(payload)} bytes, which is not a lowbit identity",
                              "is this a lowbit bitstream?")
        f = dict(zip((n for n, _ in IDENTIFY_FIELDS), struct.unpack(_IDENTIFY_STRUCT, payload[:head])))
        layers = tuple(dict(zip((n for n, _ in LAYER_FIELDS), struct.unpack_from(_LAYER_STRUCT, payload, head + 1 + i * per)))
                       for i in range(payload[head]))
        if f["magic"] != MAGIC or f["version"] != PROTOCOL_VERSION:
            raise LowbitError(f"board speaks protocol {f['magic']!r} v{f['version']}, expected {MAGIC!r} "
                              f"v{PROTOCOL_VERSION}", "rebuild the bitstream with this lowbit")
        return cls(f["config_hash"], f["input_count"], f["output_count"], f["output_bytes"], f["input_bits"],
                   bool(f["input_signed"]), bool(f["input_binary"]), f["max_batch"], bool(f["output_signed"]), layers)


def pack_inputs(codes) -> bytes:
    """Input codes (any integer array) -> one byte each, two's complement."""
    return bytes(int(c) & 0xFF for c in codes)


def unpack_outputs(payload: bytes, batch: int, count: int, nbytes: int, signed: bool = True):
    """INFER response payload -> (values as a list of lists, argmax list)."""
    per = count * nbytes + 1
    if len(payload) != batch * per:
        raise LowbitError(f"INFER response has {len(payload)} bytes, expected {batch * per}")
    values, argmax = [], []
    for b in range(batch):
        chunk = payload[b * per:(b + 1) * per]
        values.append([int.from_bytes(chunk[i * nbytes:(i + 1) * nbytes], "little", signed=signed)
                       for i in range(count)])
        argmax.append(chunk[-1])
    return values, argmax
