"""The board core: UART receiver -> frame handler -> network -> frame handler -> UART transmitter.

:class:`AccelCore` has the ports :class:`lowbit.boards.targets.BoardTop` expects (``rx``, ``tx``,
``leds``): LED 0 blinks as a heartbeat, LED 1 lights once the link has seen a bad frame.
"""

from __future__ import annotations

import json
import zlib

import numpy as np

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw import frames
from ..sw.model import Conv2d, Dense, Model
from .hostlink import HostLink
from .network import Network, _code_shape
from .serial import UARTRx, UARTTx, divisor_for

__all__ = ["AccelCore", "architecture", "architecture_hash", "identity_for"]


def architecture(model: Model, arrays) -> dict:
    """What must not change for a bitstream's ROMs to be re-weighted: shapes, widths, array sizes."""
    layers = []
    for layer in model.layers:
        entry = {"kind": layer.kind}
        if isinstance(layer, (Dense, Conv2d)):
            entry.update(shape=list(layer.weight.shape), weight_bits=layer.weight_q.bits,
                         weight_signed=layer.weight_q.signed, binary=layer.weight_q.binary,
                         out=None if layer.out_q is None else [layer.out_q.bits, layer.out_q.signed],
                         requant=type(layer.requant).__name__)
            if isinstance(layer, Conv2d):
                entry.update(stride=list(layer.stride), padding=list(layer.padding))
            if type(layer.requant).__name__ == "Thresholds":
                entry.update(thresholds=int(layer.requant.thresholds.shape[1]))
        layers.append(entry)
    return {"input_shape": list(model.input_shape),
            "input": [model.input_q.bits, model.input_q.signed, model.input_q.binary],
            "layers": layers, "arrays": [list(a) for a in arrays]}


def architecture_hash(model: Model, arrays) -> int:
    return zlib.crc32(json.dumps(architecture(model, arrays), sort_keys=True).encode())


def identity_for(model: Model, arrays, max_batch: int) -> frames.Identity:
    out_count = int(np.prod(model.output_shape))
    last = model.compute_layers()[-1]
    out_bytes = 4 if last.requant is None else 1
    out_signed = last.out_q is None or (last.out_q.signed and not last.out_q.binary)
    q = model.input_q
    layers, in_q = [], q
    for layer, (rows, cols) in zip(model.compute_layers(), arrays):
        layers.append({"kind": 2 if isinstance(layer, Conv2d) else 1, "k": layer.k, "n": layer.n,
                       "in_bits": in_q.bits, "weight_bits": layer.weight_q.bits,
                       "out_bits": 0 if layer.out_q is None else layer.out_q.bits,
                       "binary": int(layer.weight_q.binary), "rows": rows, "cols": cols})
        in_q = layer.out_q or in_q
    return frames.Identity(architecture_hash(model, arrays), int(np.prod(model.input_shape)),
                           out_count, out_bytes, q.bits, q.signed, q.binary, max_batch, out_signed, tuple(layers))


class AccelCore(wiring.Component):
    """Parameters
    ----------
    model : Model
    arrays : list of (rows, cols)
        Array size of each compute layer (from :func:`lowbit.sw.fold.fold`).
    clk_hz, baud : float
        Clock frequency and UART rate (at least 4 clocks per bit).
    max_batch : int
        Most inputs one INFER frame may carry (sizes the input buffer and output FIFO).
    timeout_bytes : int
        Byte times of silence after which a partial frame is dropped.
    """

    def __init__(self, model: Model, arrays, clk_hz: float, baud: float, max_batch: int = 8,
                 timeout_bytes: int = 32, *, reweightable: bool = False, rom_init: dict | None = None,
                 rom_block: int = 256):
        self.reweightable, self.rom_init, self.rom_block = reweightable, rom_init, rom_block
        self.model, self.arrays = model, [tuple(a) for a in arrays]
        self.divisor = divisor_for(clk_hz, baud)
        self.max_batch = max_batch
        self.timeout = timeout_bytes * 10 * self.divisor
        self.identity = identity_for(model, self.arrays, max_batch)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(2)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.net = net = Network(self.model, self.arrays, reweightable=self.reweightable,
                                         rom_init=self.rom_init, rom_block=self.rom_block)
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.link = link = HostLink(self.identity, _code_shape(self.model.input_q),
                                            net.o.payload.shape(), self.timeout)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), link.mac_cycles.eq(net.mac_cycles)]
        wiring.connect(m, rx.o, link.rx_byte)
        wiring.connect(m, link.tx_byte, tx.i)
        wiring.connect(m, link.net_i, net.i)
        wiring.connect(m, net.o, link.net_o)
        beat = Signal(24)
        m.d.sync += beat.eq(beat + 1)
        m.d.comb += self.leds.eq(beat[-1] | ((link.errors != 0) << 1))
        return m
