"""The protocol tables of lowbit.sw.link.frames: sizes, the documents generated from them, and the gateware
(hw/hostlink.py) answering INFER and COUNTERS exactly as the tables say, checked in Amaranth's simulator.
"""

import doctest
from pathlib import Path

import numpy as np
import pytest
from amaranth import signed, unsigned

from lowbit.hw.hostlink import HostLink
from lowbit.sim.streams import run_sim, stream_get, stream_put
from lowbit.sw.link import frames
from lowbit.sw.errors import LowbitError
from lowbit.sw.ir.model import Dense, Model, QuantSpec

DOC = Path(__file__).parent.parent / "docs" / "protocol.md"


def test_crc16_check_value():
    # CRC-16/CCITT-FALSE's catalogue check value, and the IDENTIFY example of the docs.
    assert frames.crc16(b"123456789") == 0x29B1
    assert frames.encode_frame(frames.IDENTIFY) == bytes.fromhex("a5010000acfb")


def test_docstring_examples_run():
    result = doctest.testmod(frames)
    assert result.attempted > 0 and result.failed == 0


def test_table_sizes():
    # IDENTIFY: 19 fixed bytes, the layer count, 11 bytes a layer; COUNTERS: 12; argmax: 1.
    assert (frames.IDENTIFY_HEAD_BYTES, frames.LAYER_BYTES, frames.COUNTERS_BYTES, frames.ARGMAX_BYTES) == (19, 11, 12, 1)
    layer = {f.name: i + 1 for i, f in enumerate(frames.LAYER_FIELDS)}
    ident = frames.Identity(0xDEADBEEF, 64, 10, 4, 4, False, False, 8, True, (layer, layer, layer))
    packed = ident.pack()
    # then the capacity record (all zeros but `loaded` for a dataflow build)
    assert frames.CAPACITY_BYTES == 36 and frames.LOAD_HEAD_BYTES == 5 and frames.COMMIT_BYTES == 19
    assert len(packed) == 19 + 1 + 3 * 11 + frames.CAPACITY_BYTES
    assert packed[-frames.CAPACITY_BYTES:] == bytes([0, 1]) + bytes(frames.CAPACITY_BYTES - 2)
    assert frames.Identity.unpack(packed) == ident
    assert ident.infer_record_bytes == 10 * 4 + 1
    capacity = {f.name: i + 1 for i, f in enumerate(frames.CAPACITY_FIELDS)}
    loadable = frames.Identity(**{**ident.__dict__, "capacity": capacity})
    assert frames.Identity.unpack(loadable.pack()) == loadable and loadable.loaded


def test_crc32_is_zlibs_and_commit_round_trips():
    import zlib
    data = bytes(range(256)) * 3
    assert frames.crc32(data) == zlib.crc32(data)
    fields = {f.name: i + 7 for i, f in enumerate(frames.COMMIT_FIELDS)}
    assert frames.unpack_commit(frames.pack_commit(fields)) == fields
    assert frames.pack_load(2, 0x01020304, b"\xaa") == bytes([2, 4, 3, 2, 1, 0xAA])


def test_an_older_protocol_is_named():
    old = bytearray(frames.Identity(1, 2, 3, 1, 4, False, False, 8).pack())
    old[4] = 1
    with pytest.raises(LowbitError, match="protocol b'LWBT' v1, expected b'LWBT' v2"):
        frames.Identity.unpack(bytes(old))


def test_protocol_doc_is_generated_from_the_tables():
    text = DOC.read_text()
    start = text.index(frames.DOC_BEGIN) + len(frames.DOC_BEGIN)
    assert text[start:text.index(frames.DOC_END)] == frames.markdown_tables(), \
        "docs/protocol.md is out of date: python -m lowbit.sw.link.frames docs/protocol.md"
    # The byte counts the doc states are the tables' sizes.
    assert f"IDENTIFY response: {frames.IDENTIFY_HEAD_BYTES} bytes" in text
    assert f"Layer record ({frames.LAYER_BYTES} bytes)" in text
    assert f"COUNTERS response ({frames.COUNTERS_BYTES} bytes)" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == sum(len(t) for t in (frames.IDENTIFY_FIELDS, frames.LAYER_FIELDS, frames.INFER_FIELDS,
                                             frames.COUNTERS_FIELDS, frames.CAPACITY_FIELDS, frames.LOAD_FIELDS,
                                             frames.COMMIT_FIELDS))


def test_counters_round_trip_and_wrong_length_is_refused():
    counters = {"cycles": 0x01020304, "mac_cycles": 0xA0B0C0D0, "frames": 0x1234, "errors": 0x0506}
    payload = frames.pack_counters(counters)
    assert payload == bytes.fromhex("04030201 d0c0b0a0 3412 0605")
    assert frames.unpack_counters(payload) == counters
    for bad in (payload[:-1], payload + b"\0", b""):
        with pytest.raises(LowbitError, match=f"COUNTERS response has {len(bad)} bytes, expected 12"):
            frames.unpack_counters(bad)


def wide_model(outputs):
    in_q = QuantSpec(4, False, 0, (0.1,))
    rng = np.random.default_rng(0)
    dense = Dense(rng.integers(-8, 8, (16, outputs)), np.zeros(outputs, dtype=np.int64),
                  QuantSpec(4, True, 0, (0.05,)), None, None)
    return Model((16,), in_q, [dense], "wide").validate()


def test_more_outputs_than_the_argmax_byte_names_are_refused(cli, tmp_path):
    from lowbit.hw.accel import identity_for
    from lowbit.hw.dense import LOGIT_BITS
    ident = identity_for(wide_model(frames.MAX_OUTPUTS), [(4, 4)], max_batch=1)
    assert ident.output_count == 256 and ident.output_bytes == LOGIT_BITS // 8
    with pytest.raises(LowbitError, match="the model has 257 outputs, more than the 256"):
        identity_for(wide_model(257), [(4, 4)], max_batch=1)
    # At the command line: refused by name before any Verilog is written.
    wide_model(300).save(tmp_path / "wide.lbm")
    code, out, err = cli("verilog", str(tmp_path / "wide.lbm"), "-o", str(tmp_path / "core.v"))
    assert code != 0 and "300 outputs" in err and not (tmp_path / "core.v").exists()


# Network outputs the board sends back, chosen for the argmax: ties (the first largest wins, as
# np.argmax), all equal, the extremes of a signed 32-bit logit, the largest last.
OUTPUTS = np.array([[5, 5, 1, 0, -3],
                    [-7, -7, -7, -7, -7],
                    [-1, 3, 9, 9, 2],
                    [-2**31, -2**31 + 1, -5, 0, 2**31 - 1],
                    [0, -1, -2**31, -2, 0]])
N_IN = 3
MAC_CYCLES = 0x0A0B0C0D


def test_hostlink_answers_infer_and_counters_as_the_tables_say():
    batch, n_out = OUTPUTS.shape
    ident = frames.Identity(0x1234ABCD, N_IN, n_out, 4, 4, False, False, batch, True, ())
    dut = HostLink(ident, unsigned(4), signed(32), timeout=10_000)
    codes = [(7 * i) % 16 for i in range(batch * N_IN)]
    got = {}

    async def host(ctx):
        ctx.set(dut.mac_cycles, MAC_CYCLES)
        bad = bytearray(frames.encode_frame(frames.COUNTERS))
        bad[-1] ^= 0x55                          # one bad frame: errors becomes 1
        await stream_put(ctx, dut.rx_byte, list(bad))
        got["error"] = await stream_get(ctx, dut.tx_byte, frames.OVERHEAD_BYTES + 1, stall=0.2)
        await stream_put(ctx, dut.rx_byte, list(frames.encode_frame(frames.INFER, bytes(codes))))
        got["infer"] = await stream_get(ctx, dut.tx_byte, frames.OVERHEAD_BYTES + batch * ident.infer_record_bytes,
                                        stall=0.3)
        await stream_put(ctx, dut.rx_byte, list(frames.encode_frame(frames.COUNTERS)))
        got["counters"] = await stream_get(ctx, dut.tx_byte, frames.OVERHEAD_BYTES + frames.COUNTERS_BYTES)

    async def network(ctx):
        got["codes"] = await stream_get(ctx, dut.net_i, batch * N_IN, stall=0.2)
        await stream_put(ctx, dut.net_o, [int(v) for v in OUTPUTS.ravel()], idle=0.3)

    run_sim(dut, host, network)
    parser = frames.FrameParser()
    (op, body), = parser.feed(bytes(got["error"]))
    assert (op, body) == (frames.ERROR, bytes([frames.BAD_CRC]))
    assert got["codes"] == codes
    (op, body), = parser.feed(bytes(got["infer"]))
    assert op == frames.INFER | frames.RESPONSE
    values, argmax = frames.unpack_outputs(body, batch, n_out, 4, signed=True)
    assert np.array_equal(values, OUTPUTS)
    # Per sample, the board's argmax byte is the reference's (np.argmax: the first largest on a tie).
    assert argmax == np.argmax(OUTPUTS, axis=1).tolist() == [0, 0, 2, 4, 0]
    (op, body), = parser.feed(bytes(got["counters"]))
    assert op == frames.COUNTERS | frames.RESPONSE
    counters = frames.unpack_counters(body)
    # Good frames before this request: the INFER (the bad one is an error, COUNTERS itself not yet counted).
    assert {k: counters[k] for k in ("mac_cycles", "frames", "errors")} == \
        {"mac_cycles": MAC_CYCLES, "frames": 1, "errors": 1}
    # From the INFER's start until the last of the 25 outputs arrived (one per beat at most).
    assert OUTPUTS.size <= counters["cycles"] < 2000
