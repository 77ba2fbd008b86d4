"""The serial-link protocol, defined once: gateware (``hw/hostlink.py``), driver and tests import it.

Frame (all multi-byte fields little-endian)::

    SYNC (0xA5) | opcode (1) | length (2) | payload (length bytes) | CRC-16 (2)

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR)
over opcode, length and payload. Requests and their responses (response opcode = request | 0x80):

=========  ======  =====================================  ============================================
request    opcode  request payload                        response payload
=========  ======  =====================================  ============================================
IDENTIFY   0x01    none                                   :data:`IDENTIFY_FIELDS` (:data:`IDENTIFY_HEAD_BYTES`
                                                          = 19 bytes), then one byte L and L layer records
                                                          (:data:`LAYER_FIELDS`, 11 bytes each)
INFER      0x02    B x ``input_count`` codes, 1 byte each  B records of :data:`INFER_FIELDS`: ``output_count``
                   (two's complement; binary: 1 = +1)      values of ``output_bytes`` bytes, then 1 byte argmax
COUNTERS   0x03    none                                   :data:`COUNTERS_FIELDS` (:data:`COUNTERS_BYTES` = 12)
LOAD       0x04    :data:`LOAD_FIELDS` (5 bytes), then    none (the words are in the memory)
                   whole words of the space, each
                   little-endian in its word bytes
COMMIT     0x05    :data:`COMMIT_FIELDS`                  none (the model is checked and runs)
=========  ======  =====================================  ============================================

The IDENTIFY response ends with the :data:`CAPACITY_FIELDS` record: what a loadable overlay holds
(zeros but ``loaded`` for a dataflow build, which answers LOAD and COMMIT with :data:`BAD_OPCODE`).

**Loading a model** (overlay builds): LOAD frames write words into one of the :data:`SPACES` (the
identity the board answers IDENTIFY with, the layer program, the weights, the parameters) at a word
address. A chunk is written only once its CRC is good, and writing the same chunk twice is harmless, so
a chunk answered with ERROR is simply sent again. An accepted LOAD marks the board *empty*: INFER is
answered with :data:`NOT_LOADED` until a COMMIT whose checksum — CRC-32 (:func:`crc32`, as
``zlib.crc32``) over the loaded words of the four spaces in order, each word little-endian in its word
bytes — equals what the board reads back from its memories; then the new model runs from its first
layer. A wrong checksum is answered with :data:`BAD_CHECKSUM` and the board stays empty; a reset
(power cut) leaves it empty too when its weights live in memory without bitstream initialisation.

The byte counts in ``docs/protocol.md`` are generated from these tables (:func:`markdown_tables`; a test
checks the document is up to date: regenerate with ``python -m lowbit.sw.link.frames docs/protocol.md``).

A bad frame is answered with ``ERROR`` (0xFF) and a one-byte code: :data:`BAD_CRC`, :data:`BAD_LENGTH`
(not 0 for IDENTIFY/COUNTERS, not a whole batch of 1..``max_batch`` inputs for INFER, a LOAD without
data or with more than ``chunk_bytes``), :data:`BAD_OPCODE`, :data:`TIMEOUT` (a frame stopped arriving
for ``timeout`` byte times; the partial frame is dropped), :data:`BAD_CHECKSUM`, :data:`NOT_LOADED`,
:data:`BAD_ADDRESS` (a LOAD to no space, past its end, or not of whole words).
After any error the receiver hunts for the next SYNC byte, so garbage between frames is skipped.
Example — IDENTIFY request: ``a5 01 00 00 ac fb`` (CRC over ``01 00 00`` is 0xFBAC).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import LowbitError

__all__ = ["SYNC", "IDENTIFY", "INFER", "COUNTERS", "ERROR", "RESPONSE", "BAD_CRC", "BAD_LENGTH", "BAD_OPCODE",
           "TIMEOUT", "ERROR_NAMES", "IDENTIFY_FIELDS", "LAYER_FIELDS", "COUNTERS_FIELDS", "INFER_FIELDS", "Field",
           "IDENTIFY_HEAD_BYTES", "LAYER_BYTES", "COUNTERS_BYTES", "ARGMAX_BYTES", "MAX_OUTPUTS", "value_bytes", "field_bits",
           "crc16", "encode_frame", "FrameParser", "Identity", "pack_counters", "unpack_counters", "pack_inputs",
           "unpack_outputs", "markdown_tables", "update_doc", "HEADER_BYTES", "OVERHEAD_BYTES", "LOAD", "COMMIT",
           "BAD_CHECKSUM", "NOT_LOADED", "BAD_ADDRESS", "SPACES", "LOAD_FIELDS", "COMMIT_FIELDS", "CAPACITY_FIELDS",
           "LOAD_HEAD_BYTES", "COMMIT_BYTES", "CAPACITY_BYTES", "crc32", "crc32_register", "EMPTY_IDENTITY",
           "pack_capacity", "pack_load", "pack_commit", "unpack_commit", "MAX_VALUE_BYTES", "FLASH_MAGIC",
           "FLASH_MAX_BLOB", "flash_blob", "field_layout", "load_payloads"]

SYNC = 0xA5
IDENTIFY, INFER, COUNTERS, LOAD, COMMIT = 0x01, 0x02, 0x03, 0x04, 0x05
RESPONSE = 0x80
ERROR = 0xFF
BAD_CRC, BAD_LENGTH, BAD_OPCODE, TIMEOUT, BAD_CHECKSUM, NOT_LOADED, BAD_ADDRESS = 1, 2, 3, 4, 5, 6, 7
ERROR_NAMES = {BAD_CRC: "bad CRC", BAD_LENGTH: "bad length", BAD_OPCODE: "unknown opcode", TIMEOUT: "timeout",
               BAD_CHECKSUM: "model checksum differs", NOT_LOADED: "no model loaded",
               BAD_ADDRESS: "load outside the memory"}
#: The memories a LOAD writes, by number: the IDENTIFY record (bytes), the layer program, the weights and
#: the parameters (words of the widths the capacity record names).
SPACES = ("identity", "program", "weights", "params")
HEADER_BYTES = 4       # sync, opcode, length
OVERHEAD_BYTES = 6     # header + CRC

class Field(NamedTuple):
    """One field of a response: its name (a key of the decoded dict), its :mod:`struct` format
    (``"*"`` for the INFER values, whose size the identity gives) and what it means (for the docs)."""

    name: str
    fmt: str
    meaning: str


MAGIC = b"LWBT"
PROTOCOL_VERSION = 2


def _struct(fields) -> str:
    return "<" + "".join(f.fmt for f in fields)


def _pack_fields(fields, values: dict) -> bytes:
    """A fixed-size table's bytes from a dict keyed by its field names (integers)."""
    return struct.pack(_struct(fields), *(int(values[f.name]) for f in fields))


def _unpack_fields(fields, data: bytes, offset: int = 0) -> dict:
    """A fixed-size table, read from ``data`` at ``offset``, as a dict keyed by its field names."""
    return dict(zip((f.name for f in fields), struct.unpack_from(_struct(fields), data, offset)))


def field_layout(fields) -> list[tuple[str, int, int]]:
    """``(name, byte offset, bytes)`` of each field of a fixed-size table (the gateware steers request
    bytes into registers by it)."""
    out, offset = [], 0
    for f in fields:
        size = struct.calcsize("<" + f.fmt)
        out.append((f.name, offset, size))
        offset += size
    return out


#: IDENTIFY response fields, in order; then one byte L and L records of :data:`LAYER_FIELDS`.
IDENTIFY_FIELDS = (
    Field("magic", "4s", f"`{MAGIC.decode()}`"), Field("version", "B", "protocol version"),
    Field("config_hash", "I", "architecture hash"), Field("input_count", "H", "input count"),
    Field("output_count", "H", "output count"), Field("output_bytes", "B", "bytes per output value"),
    Field("input_bits", "B", "input bits"), Field("input_signed", "B", "input signed"),
    Field("input_binary", "B", "input binary"), Field("max_batch", "B", "max batch"),
    Field("output_signed", "B", "output signed"))
_IDENTIFY_STRUCT = _struct(IDENTIFY_FIELDS)
#: One compute layer in the IDENTIFY response.
LAYER_FIELDS = (
    Field("kind", "B", "kind (1 Dense, 2 Conv2d)"), Field("k", "H", "K (inputs)"), Field("n", "H", "N (outputs)"),
    Field("in_bits", "B", "input bits"), Field("weight_bits", "B", "weight bits"),
    Field("out_bits", "B", "output bits (0 = integer logits)"), Field("binary", "B", "binary"),
    Field("rows", "B", "array rows"), Field("cols", "B", "array columns"))
_LAYER_STRUCT = _struct(LAYER_FIELDS)
#: COUNTERS response fields, in order (each counter wraps at its width).
COUNTERS_FIELDS = (
    Field("cycles", "I", "cycles of the last INFER, from its start to the network's last output"),
    Field("mac_cycles", "I", "MAC cycles (cycles the arrays computed, summed over the engines)"),
    Field("frames", "H", "good frames received before this request"),
    Field("errors", "H", "bad frames answered with ERROR"))
_COUNTERS_STRUCT = _struct(COUNTERS_FIELDS)
#: One record of the INFER response per input of the batch.
INFER_FIELDS = (
    Field("values", "*", "`output_count` values of `output_bytes` bytes each (two's complement if "
          "`output_signed`)"),
    Field("argmax", "B", "index of the first largest value (ties go to the lowest index)"))

#: LOAD request: which memory and the word address of the first word, then the words.
LOAD_FIELDS = (Field("space", "B", "memory: 0 identity, 1 program, 2 weights, 3 parameters (SPACES)"),
               Field("address", "I", "word address of the first word"))
_LOAD_STRUCT = _struct(LOAD_FIELDS)
#: COMMIT request: how much of each space the model uses, the link's figures for it, and the checksum.
COMMIT_FIELDS = (
    Field("identity_bytes", "H", "bytes of the identity record (IDENTIFY head and layer records)"),
    Field("program_words", "H", "words of the layer program"),
    Field("weight_words", "I", "words of weights"),
    Field("param_words", "H", "words of parameters"),
    Field("input_count", "H", "input codes per inference"),
    Field("output_count", "H", "output values per inference"),
    Field("output_bytes", "B", "bytes per output value"),
    Field("checksum", "I", "CRC-32 of the loaded words (module docstring)"))
_COMMIT_STRUCT = _struct(COMMIT_FIELDS)
#: The end of the IDENTIFY response: what a loadable overlay can hold.
CAPACITY_FIELDS = (
    Field("loadable", "B", "1: an overlay that takes LOAD and COMMIT"),
    Field("loaded", "B", "1: a model is committed and INFER runs it"),
    Field("overlay_hash", "I", "hash of the overlay's configuration (0 for dataflow)"),
    Field("rows", "B", "array rows"), Field("cols", "B", "array columns"),
    Field("act_unsigned", "B", "unsigned input widths: bit b-1 for b bits"),
    Field("act_signed", "B", "signed input widths: bit b-1 for b bits"),
    Field("act_binary", "B", "1: binary (±1) inputs"),
    Field("weight_signed", "B", "signed weight widths: bit b-1 for b bits"),
    Field("weight_binary", "B", "1: ±1 weights"),
    Field("act_depth", "H", "activation words per bank (of `rows` codes)"),
    Field("max_layers", "B", "layers the program holds"),
    Field("max_thresholds", "B", "thresholds per channel"),
    Field("acc_bits", "B", "accumulator bits"), Field("mult_bits", "B", "requantization multiplier bits"),
    Field("identity_depth", "H", "bytes of the identity space"),
    Field("program_depth", "H", "words of the program space"), Field("program_word_bytes", "B", "bytes per program word"),
    Field("weight_depth", "I", "words of the weight space"), Field("weight_word_bytes", "B", "bytes per weight word"),
    Field("param_depth", "H", "words of the parameter space"), Field("param_word_bytes", "B", "bytes per parameter word"),
    Field("input_buffer", "H", "bytes of the input buffer (INFER batch x inputs)"),
    Field("chunk_bytes", "H", "most data bytes one LOAD carries"))
_CAPACITY_STRUCT = _struct(CAPACITY_FIELDS)

IDENTIFY_HEAD_BYTES = struct.calcsize(_IDENTIFY_STRUCT)    # 19, then the layer count byte
LAYER_BYTES = struct.calcsize(_LAYER_STRUCT)               # 11
COUNTERS_BYTES = struct.calcsize(_COUNTERS_STRUCT)         # 12
LOAD_HEAD_BYTES = struct.calcsize(_LOAD_STRUCT)            # 5
COMMIT_BYTES = struct.calcsize(_COMMIT_STRUCT)
CAPACITY_BYTES = struct.calcsize(_CAPACITY_STRUCT)
ARGMAX_BYTES = struct.calcsize("<" + INFER_FIELDS[1].fmt)
#: Most outputs a model may have: the INFER response names the largest in :data:`ARGMAX_BYTES` bytes.
MAX_OUTPUTS = 1 << (8 * ARGMAX_BYTES)
#: Most bytes an output value takes (32-bit integer logits).
MAX_VALUE_BYTES = 4


def value_bytes(bits: int) -> int:
    """Bytes an output value of ``bits`` bits takes in the INFER response (sign-extended to whole bytes)."""
    return -(-bits // 8)


def field_bits(fields, name: str) -> int:
    """Width in bits of field ``name`` of a fixed-size table (the gateware sizes its registers by it)."""
    for field, _, size in field_layout(fields):
        if field == name:
            return 8 * size
    raise KeyError(name)


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE.

    >>> hex(crc16(b"123456789"))      # the standard check value
    '0x29b1'
    """
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _crc32_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32_TABLE = _crc32_table()


def crc32_register(data: bytes, reg: int = 0xFFFFFFFF) -> int:
    """The CRC-32 shift register after ``data`` (reflected, polynomial 0xEDB88320), without the final
    XOR: linear over GF(2), so the gateware derives its XOR matrix from this function."""
    for byte in data:
        reg = (reg >> 8) ^ _CRC32_TABLE[(reg ^ byte) & 0xFF]
    return reg


def crc32(data: bytes) -> int:
    """CRC-32 as ``zlib.crc32`` (the COMMIT checksum).

    >>> hex(crc32(b"123456789"))
    '0xcbf43926'
    """
    return crc32_register(data) ^ 0xFFFFFFFF


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
    """What a board says about the network it runs (the IDENTIFY response).

    Raises
    ------
    LowbitError
        if ``output_count`` is more than the INFER response's argmax byte can name (:data:`MAX_OUTPUTS`).
    """

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
    capacity: dict | None = None    # keys of CAPACITY_FIELDS; None: a dataflow build (loadable 0, loaded 1)

    def __post_init__(self):
        if self.output_count > MAX_OUTPUTS:
            raise LowbitError(f"the model has {self.output_count} outputs, more than the {MAX_OUTPUTS} the "
                              f"INFER response's {ARGMAX_BYTES}-byte argmax can name",
                              f"lowbit builds networks with at most {MAX_OUTPUTS} outputs")

    @property
    def infer_record_bytes(self) -> int:
        """Bytes of one :data:`INFER_FIELDS` record: the values, then the argmax."""
        return self.output_count * self.output_bytes + ARGMAX_BYTES

    def pack_model(self) -> bytes:
        """The identity record without the capacity: the IDENTIFY head, L and the layer records (what a
        loadable overlay holds in its ``identity`` space)."""
        values = {"magic": MAGIC, "version": PROTOCOL_VERSION}
        head = struct.pack(_IDENTIFY_STRUCT, *(values[f.name] if f.name in values else int(getattr(self, f.name))
                                               for f in IDENTIFY_FIELDS))
        return head + bytes([len(self.layers)]) + b"".join(_pack_fields(LAYER_FIELDS, layer) for layer in self.layers)

    def pack(self) -> bytes:
        """The whole IDENTIFY response payload."""
        return self.pack_model() + pack_capacity(self.capacity)

    @property
    def loaded(self) -> bool:
        return self.capacity is None or bool(self.capacity["loaded"])

    @classmethod
    def unpack(cls, payload: bytes) -> "Identity":
        head, per = IDENTIFY_HEAD_BYTES, LAYER_BYTES
        if len(payload) >= head and payload[:4] == MAGIC and payload[4] != PROTOCOL_VERSION:
            raise LowbitError(f"board speaks protocol {MAGIC!r} v{payload[4]}, expected {MAGIC!r} "
                              f"v{PROTOCOL_VERSION}", "rebuild the bitstream with this lowbit")
        if len(payload) < head + 1 or len(payload) != head + 1 + payload[head] * per + CAPACITY_BYTES:
            raise LowbitError(f"IDENTIFY response has {len(payload)} bytes, which is not a lowbit identity",
                              "is this a lowbit bitstream?")
        capacity = _unpack_fields(CAPACITY_FIELDS, payload, len(payload) - CAPACITY_BYTES)
        f = _unpack_fields(IDENTIFY_FIELDS, payload)
        layers = tuple(_unpack_fields(LAYER_FIELDS, payload, head + 1 + i * per) for i in range(payload[head]))
        if f["magic"] != MAGIC:        # (another version with lowbit's magic is named above)
            raise LowbitError(f"board speaks protocol {f['magic']!r} v{f['version']}, expected {MAGIC!r} "
                              f"v{PROTOCOL_VERSION}", "rebuild the bitstream with this lowbit")
        return cls(f["config_hash"], f["input_count"], f["output_count"], f["output_bytes"], f["input_bits"],
                   bool(f["input_signed"]), bool(f["input_binary"]), f["max_batch"], bool(f["output_signed"]), layers,
                   capacity if capacity["loadable"] else None)


#: The identity record of a loadable overlay that holds no model (config hash 0, no inputs, no layers).
EMPTY_IDENTITY = Identity(0, 0, 0, 0, 0, False, False, 0, False, ())


def pack_capacity(capacity: dict | None) -> bytes:
    """The :data:`CAPACITY_FIELDS` record; None (a dataflow build) is all zeros but ``loaded`` = 1."""
    if capacity is None:
        capacity = {f.name: 0 for f in CAPACITY_FIELDS} | {"loaded": 1}
    return _pack_fields(CAPACITY_FIELDS, capacity)


#: A model blob in a board's SPI flash (``hw/flashboot.py``): this magic, a u32 length, then that many
#: bytes of LOAD and COMMIT frames, exactly as a host sends them.
FLASH_MAGIC = b"LWBM"
#: Largest blob the boot reader accepts (a 1 Mbit SPRAM model and its frames fit in 256 KiB).
FLASH_MAX_BLOB = 1 << 20


def flash_blob(frames_bytes: bytes) -> bytes:
    """The flash blob around the LOAD and COMMIT frames ``frames_bytes``."""
    return FLASH_MAGIC + struct.pack("<I", len(frames_bytes)) + bytes(frames_bytes)


def pack_load(space: int, address: int, data: bytes) -> bytes:
    """A LOAD request payload: :data:`LOAD_FIELDS`, then the words' bytes."""
    return struct.pack(_LOAD_STRUCT, space, address) + bytes(data)


def load_payloads(spaces: dict, word_bytes: dict, chunk_bytes: int) -> list[bytes]:
    """The LOAD payloads of a model: each space's bytes (whole little-endian words of
    ``word_bytes[space]``) in chunks of at most ``chunk_bytes`` whole words, space by space."""
    out = []
    for space, data in sorted(spaces.items()):
        wb = word_bytes[space]
        step = max(wb, chunk_bytes // wb * wb)
        out += [pack_load(space, offset // wb, data[offset:offset + step]) for offset in range(0, len(data), step)]
    return out


def pack_commit(fields: dict) -> bytes:
    """A COMMIT request payload from a dict keyed by the names of :data:`COMMIT_FIELDS`."""
    return _pack_fields(COMMIT_FIELDS, fields)


def unpack_commit(payload: bytes) -> dict:
    if len(payload) != COMMIT_BYTES:
        raise LowbitError(f"COMMIT payload has {len(payload)} bytes, expected {COMMIT_BYTES}")
    return _unpack_fields(COMMIT_FIELDS, payload)


def pack_counters(counters: dict) -> bytes:
    """``{"cycles", "mac_cycles", "frames", "errors"}`` -> the COUNTERS response payload."""
    return _pack_fields(COUNTERS_FIELDS, counters)


def unpack_counters(payload: bytes) -> dict:
    """The COUNTERS response payload -> a dict keyed by the names of :data:`COUNTERS_FIELDS`.

    >>> unpack_counters(bytes.fromhex("e8030000 10270000 0500 0100"))
    {'cycles': 1000, 'mac_cycles': 10000, 'frames': 5, 'errors': 1}
    """
    if len(payload) != COUNTERS_BYTES:
        raise LowbitError(f"COUNTERS response has {len(payload)} bytes, expected {COUNTERS_BYTES}",
                          "is this a lowbit bitstream of this version?")
    return _unpack_fields(COUNTERS_FIELDS, payload)


def pack_inputs(codes) -> bytes:
    """Input codes (any integer array) -> one byte each, two's complement."""
    return bytes(int(c) & 0xFF for c in codes)


def unpack_outputs(payload: bytes, batch: int, count: int, nbytes: int, signed: bool = True):
    """INFER response payload (``batch`` records of :data:`INFER_FIELDS`) -> (values as a list of lists,
    argmax list)."""
    per = count * nbytes + ARGMAX_BYTES
    if len(payload) != batch * per:
        raise LowbitError(f"INFER response has {len(payload)} bytes, expected {batch * per}")
    values, argmax = [], []
    for b in range(batch):
        chunk = payload[b * per:(b + 1) * per]
        values.append([int.from_bytes(chunk[i * nbytes:(i + 1) * nbytes], "little", signed=signed)
                       for i in range(count)])
        argmax.append(int.from_bytes(chunk[count * nbytes:], "little"))
    return values, argmax


_TYPE_NAMES = {"B": "u8", "H": "u16", "I": "u32"}


def _field_rows(fields) -> list[str]:
    rows = []
    for f in fields:
        if f.fmt == "*":
            size, kind = "`output_count` × `output_bytes`", "values"
        else:
            size, kind = str(struct.calcsize("<" + f.fmt)), _TYPE_NAMES.get(f.fmt, "bytes")
        rows.append(f"| `{f.name}` | {size} | {kind} | {f.meaning} |")
    return rows


def markdown_tables() -> str:
    """The response layouts as Markdown tables, generated from the field tables above (they are the
    section of ``docs/protocol.md`` between the ``frames.markdown_tables`` markers)."""
    from ...hw.dense import LOGIT_BITS
    head = "\n| field | bytes | type | meaning |\n|---|---|---|---|"
    parts = [
        f"IDENTIFY response: {IDENTIFY_HEAD_BYTES} bytes, then a layer count L (1 byte), L layer records "
        f"of {LAYER_BYTES} bytes and the capacity record ({CAPACITY_BYTES} bytes), so "
        f"{IDENTIFY_HEAD_BYTES + 1 + CAPACITY_BYTES} + {LAYER_BYTES} L bytes in all.",
        head, *_field_rows(IDENTIFY_FIELDS), "",
        f"Layer record ({LAYER_BYTES} bytes), one per compute layer:", head, *_field_rows(LAYER_FIELDS), "",
        f"INFER response: one record per input of the batch, `output_count` × `output_bytes` + {ARGMAX_BYTES} "
        f"bytes each (`output_bytes` is 1 for codes, {value_bytes(LOGIT_BITS)} for {LOGIT_BITS}-bit integer "
        f"logits; at most {MAX_OUTPUTS} outputs):",
        head, *_field_rows(INFER_FIELDS), "",
        f"COUNTERS response ({COUNTERS_BYTES} bytes):", head, *_field_rows(COUNTERS_FIELDS), "",
        f"Capacity record ({CAPACITY_BYTES} bytes), the end of every IDENTIFY response:", head,
        *_field_rows(CAPACITY_FIELDS), "",
        f"LOAD request: {LOAD_HEAD_BYTES} bytes, then whole words of the space (each little-endian in its "
        f"word bytes), at most `chunk_bytes` of them:", head, *_field_rows(LOAD_FIELDS), "",
        f"COMMIT request ({COMMIT_BYTES} bytes):", head, *_field_rows(COMMIT_FIELDS),
    ]
    return "\n".join(parts) + "\n"


DOC_BEGIN = "<!-- begin: generated by lowbit.sw.link.frames.markdown_tables() -->\n"
DOC_END = "<!-- end: generated -->\n"


def update_doc(path) -> bool:
    """Rewrite the generated section of ``path`` (between :data:`DOC_BEGIN` and :data:`DOC_END`);
    True if it changed."""
    from pathlib import Path
    path = Path(path)
    text = path.read_text()
    start, end = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    new = text[:start] + markdown_tables() + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    import sys
    for doc in sys.argv[1:]:
        print(f"{doc}: {'updated' if update_doc(doc) else 'up to date'}")
