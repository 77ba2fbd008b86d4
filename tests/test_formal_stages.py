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
from lowbit.sw.model import Dense, QuantSpec, Thresholds


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
