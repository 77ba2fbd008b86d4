"""Formal checks of the other stream stages (SymbiYosys BMC).

Handshake rules (valid never depends on ready; a stalled beat holds) for the chunk packer, the replay
stage and a multi-chunk, multi-group layer engine; full data integrity (every byte out equals the byte
in, in order, none lost or duplicated) for the UART transmitter wired to the receiver.
"""

import numpy as np
import pytest
from amaranth import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit.hw.config import ArrayConfig
from lowbit.hw.dense import DenseEngine, EngineParams
from lowbit.hw.network import ChunkPacker, Replay
from lowbit.hw.serial import UARTRx, UARTTx
from lowbit.sim.formal import check_formal
from lowbit.sim.formal_stream import StreamStageSpec
from lowbit.sw.ir.model import Dense, QuantSpec, Thresholds


class _UARTLoop(wiring.Component):
    def __init__(self, divisor):
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.d.comb += rx.rx.eq(tx.tx)
        wiring.connect(m, wiring.flipped(self.i), tx.i)
        wiring.connect(m, rx.o, wiring.flipped(self.o))
        return m


def test_uart_loopback_delivers_every_byte_in_order(tmp_path):
    # 4 clocks per bit: two whole bytes fit in the 96-cycle bound.
    spec = StreamStageSpec(lambda: _UARTLoop(4), lambda m, payload: payload, count_bits=8, sink_ready=True)
    result = check_formal(spec, tmp_path, depth=96)
    assert result.passed, result.summary


@pytest.mark.parametrize("stage", ["packer", "replay", "maxpool", "engine"])
def test_handshake_rules(tmp_path, stage):
    if stage == "packer":
        make = lambda: ChunkPacker(unsigned(3), rows=3, k=5, pad=0)
    elif stage == "replay":
        make = lambda: Replay(unsigned(3), 4, [2, None, 0, 3, 1], pad=5)
    elif stage == "maxpool":
        make = lambda: Replay(unsigned(3), 4, [0, 1, 2, 3], window=2)
    else:
        b = QuantSpec(1, True, binary=True)
        w = np.array([[1, -1, 1], [-1, 1, 1], [1, 1, -1]])
        layer = Dense(w, np.zeros(3, np.int64), b, b, Thresholds(np.zeros((3, 1), np.int64), -1, 2))
        cfg = ArrayConfig(rows=2, cols=2, act_bits=1, weight_bits=1, binary=True, max_k=3)
        make = lambda: DenseEngine(cfg, EngineParams.from_layer(layer, b))
    result = check_formal(StreamStageSpec(make), tmp_path, depth=20)
    assert result.passed, result.summary


from amaranth import Elaboratable, Signal, Value  # noqa: E402
from amaranth.asserts import AnyConst, AnySeq, Initial  # noqa: E402
from amaranth.hdl import Assert, Assume  # noqa: E402


class _DataSpec(Elaboratable):
    """Tracked-beat data check for stages whose beats do not map one to one: the solver picks one input
    beat and ``check`` says where its value must appear."""

    def __init__(self, make_stage, bits):
        self.make_stage, self.bits = make_stage, bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.make_stage()
        in_valid, in_payload, out_ready = AnySeq(1), AnySeq(self.bits), AnySeq(1)
        m.d.comb += [dut.i.valid.eq(in_valid), dut.i.payload.eq(in_payload), dut.o.ready.eq(out_ready)]
        held = Signal()
        held_payload = Signal(self.bits)
        m.d.sync += [held.eq(dut.i.valid & ~dut.i.ready), held_payload.eq(in_payload)]
        with m.If(held & ~Initial()):
            m.d.comb += [Assume(in_valid), Assume(in_payload == held_payload)]
        self.n_in, self.n_out = Signal(8), Signal(8)
        self.in_fire = dut.i.valid & dut.i.ready
        self.out_fire = dut.o.valid & dut.o.ready
        with m.If(self.in_fire):
            m.d.sync += self.n_in.eq(self.n_in + 1)
        with m.If(self.out_fire):
            m.d.sync += self.n_out.eq(self.n_out + 1)
        self.check(m, dut, Value.cast(dut.i.payload), Value.cast(dut.o.payload))
        return m


class _PackerData(_DataSpec):
    def __init__(self, rows, k, bits, pad):
        self.rows, self.k, self.pad = rows, k, pad
        super().__init__(lambda: ChunkPacker(unsigned(bits), rows, k, pad), bits)

    def check(self, m, dut, i_payload, o_payload):
        R, K, b = self.rows, self.k, self.bits
        kc = -(-K // R)
        pick = AnyConst(5)
        rec, have = Signal(b), Signal()
        with m.If(self.in_fire & (self.n_in == pick)):
            m.d.sync += [rec.eq(i_payload), have.eq(1)]
        chunk = (pick // K) * kc + (pick % K) // R
        lane = (pick % K) % R
        with m.If(self.out_fire & (self.n_out == chunk)):
            m.d.comb += [Assert(have), Assert(o_payload.word_select(lane, b) == rec)]
        # lanes past K in a vector's last chunk hold the pad code
        last_fill = K - (kc - 1) * R
        with m.If(self.out_fire & (self.n_out % kc == kc - 1)):
            for r in range(last_fill, R):
                m.d.comb += Assert(o_payload[r * b:(r + 1) * b] == self.pad)


class _ReplayData(_DataSpec):
    """Output beat number ``pick`` must be the input code at ``sequence[pick % L]`` of its frame, or the
    pad code for a padded tap."""

    def __init__(self, depth, sequence, bits, pad):
        self.depth, self.sequence, self.pad = depth, sequence, pad
        super().__init__(lambda: Replay(unsigned(bits), depth, sequence, pad=pad), bits)

    def check(self, m, dut, i_payload, o_payload):
        from amaranth import Array, Const
        L, D = len(self.sequence), self.depth
        pick = AnyConst(3)
        frame, j = pick // L, pick % L
        addrs = Array([Const(a or 0, 4) for a in self.sequence])
        pads = Array([Const(a is None, 1) for a in self.sequence])
        rec, have = Signal(self.bits), Signal()
        with m.If(self.in_fire & (self.n_in == frame * D + addrs[j])):
            m.d.sync += [rec.eq(i_payload), have.eq(1)]
        with m.If(self.out_fire & (self.n_out == pick)):
            with m.If(pads[j]):
                m.d.comb += Assert(o_payload == self.pad)
            with m.Else():
                m.d.comb += [Assert(have), Assert(o_payload == rec)]


def test_replay_data_for_every_input_and_stall_pattern(tmp_path):
    # 3-code map replayed as [2, pad, 0, 1]: two frames fit the 20-cycle bound.
    result = check_formal(_ReplayData(3, [2, None, 0, 1], bits=2, pad=3), tmp_path, depth=20)
    assert result.passed, result.summary
    wrong = _ReplayData(3, [2, None, 0, 1], bits=2, pad=3)
    wrong.pad = 2                                   # expect the wrong pad code: the proof must fail
    assert not check_formal(wrong, tmp_path / "wrong", depth=20).passed


def test_chunk_packer_data_for_every_input_and_stall_pattern(tmp_path):
    result = check_formal(_PackerData(rows=3, k=5, bits=3, pad=6), tmp_path, depth=24)
    assert result.passed, result.summary


def test_data_specs_catch_a_wrong_expectation(tmp_path):
    # Claim the pad is 7 while the packer pads with 6: the proof must fail.
    spec = _PackerData(rows=3, k=5, bits=3, pad=6)
    spec.pad = 7
    assert not check_formal(spec, tmp_path, depth=16).passed
