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

from ..sw.link import frames
from ..sw.ir.model import Conv2d, Dense, Model
from .dense import LOGIT_BITS
from .hostlink import HostLink
from .network import Network, _code_shape
from .overlay import OverlayEngine
from .serial import UARTRx, UARTTx, divisor_for

__all__ = ["AccelCore", "architecture", "architecture_difference", "architecture_hash", "identity_for"]


def architecture(model: Model, arrays) -> dict:
    """What the netlist of a (reweightable) build depends on, so what must not change for its ROMs to be
    re-weighted: shapes, widths, array sizes, and every value the gateware holds as a constant rather
    than in a ROM — each layer's input zero point (a Conv2d's padding code), the requantizer's output
    zero point and clamp (ReLU raises the low clamp), a multi-threshold's count, offset and step. The
    rest (weights, folded biases, multipliers, shifts, thresholds) lives in the patchable ROMs."""
    from ..sw.ir.model import Requant, Thresholds
    layers = []
    in_q = model.input_q
    for layer in model.layers:
        entry = {"kind": layer.kind}
        if isinstance(layer, (Dense, Conv2d)):
            rq = layer.requant
            entry.update(shape=list(layer.weight.shape), weight_bits=layer.weight_q.bits,
                         weight_signed=layer.weight_q.signed, binary=layer.weight_q.binary,
                         out=None if layer.out_q is None else [layer.out_q.bits, layer.out_q.signed,
                                                                layer.out_q.binary],
                         requant=type(rq).__name__, in_zero_point=int(in_q.zero_point))
            if isinstance(layer, Conv2d):
                entry.update(stride=list(layer.stride), padding=list(layer.padding))
            if isinstance(rq, Requant):
                entry.update(zero_point=int(rq.zero_point), clamp=[int(max(rq.lo, rq.zero_point) if rq.relu
                                                                       else rq.lo), int(rq.hi)])
            elif isinstance(rq, Thresholds):
                entry.update(thresholds=int(rq.thresholds.shape[1]), out_lo=int(rq.out_lo),
                             out_step=int(rq.out_step))
            in_q = layer.out_q or in_q
        layers.append(entry)
    return {"input_shape": list(model.input_shape),
            "input": [model.input_q.bits, model.input_q.signed, model.input_q.binary],
            "layers": layers, "arrays": [list(a) for a in arrays]}


def architecture_difference(a: dict, b: dict) -> str | None:
    """The first field in which two :func:`architecture` records differ, said for a user
    (``"layer 1 (dense) zero_point: 0 in the build, 3 in the new model"``), or None if they are equal."""
    for key in ("input_shape", "input", "arrays"):
        if a[key] != b[key]:
            return f"{key.replace('_', ' ')}: {a[key]} in the build, {b[key]} in the new model"
    if len(a["layers"]) != len(b["layers"]):
        return f"layer count: {len(a['layers'])} in the build, {len(b['layers'])} in the new model"
    for i, (la, lb) in enumerate(zip(a["layers"], b["layers"])):
        for key in sorted(set(la) | set(lb)):
            if la.get(key) != lb.get(key):
                return f"layer {i} ({la['kind']}) {key}: {la.get(key)} in the build, {lb.get(key)} in the new model"
    return None


def architecture_hash(model: Model, arrays) -> int:
    return zlib.crc32(json.dumps(architecture(model, arrays), sort_keys=True).encode())


def identity_for(model: Model, arrays, max_batch: int) -> frames.Identity:
    out_count = int(np.prod(model.output_shape))
    last = model.compute_layers()[-1]
    # Integer logits are LOGIT_BITS wide, codes at most 8 bits: each value is sent in whole bytes.
    out_bytes = frames.value_bytes(LOGIT_BITS if last.requant is None else last.out_q.bits)
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
        Array size of each compute layer (from :func:`lowbit.sw.flow.fold.fold`).
    clk_hz, baud : float
        Clock frequency and UART rate (at least 4 clocks per bit).
    max_batch : int
        Most inputs one INFER frame may carry (sizes the input buffer and output FIFO).
    timeout_bytes : int
        Byte times of silence after which a partial frame is dropped.
    mult : str
        ``"lut"`` or ``"dsp"``: how every array's products are written (:class:`~lowbit.hw.config.ArrayConfig`).
    overlay : tuple, optional
        ``(OverlayConfig, descriptors, weights, params)``: run the model on an
        :class:`~lowbit.hw.overlay.OverlayEngine` (one array for every layer; ``arrays`` then names that
        array once per compute layer) instead of a :class:`~lowbit.hw.network.Network` of layer engines.
    """

    def __init__(self, model: Model, arrays, clk_hz: float, baud: float, max_batch: int = 8,
                 timeout_bytes: int = 32, *, reweightable: bool = False, rom_init: dict | None = None,
                 rom_block: int = 256, mult: str = "lut", overlay=None):
        if overlay is not None and reweightable:
            raise ValueError("an overlay loads its weights; it is not built reweightable")
        self.overlay = overlay
        self.reweightable, self.rom_init, self.rom_block = reweightable, rom_init, rom_block
        self.mult = mult
        self.model, self.arrays = model, [tuple(a) for a in arrays]
        self.divisor = divisor_for(clk_hz, baud)
        self.max_batch = max_batch
        self.timeout = timeout_bytes * 10 * self.divisor
        self.identity = identity_for(model, self.arrays, max_batch)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(2)})

    def elaborate(self, platform):
        m = Module()
        if self.overlay is not None:
            cfg, descriptors, weights, params = self.overlay
            m.submodules.net = net = OverlayEngine(cfg, descriptors, weights, params)
            code_shape = net.i.payload.shape()
        else:
            m.submodules.net = net = Network(self.model, self.arrays, reweightable=self.reweightable,
                                             rom_init=self.rom_init, rom_block=self.rom_block, mult=self.mult)
            code_shape = _code_shape(self.model.input_q)
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.link = link = HostLink(self.identity, code_shape, net.o.payload.shape(), self.timeout)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), link.mac_cycles.eq(net.mac_cycles)]
        wiring.connect(m, rx.o, link.rx_byte)
        wiring.connect(m, link.tx_byte, tx.i)
        wiring.connect(m, link.net_i, net.i)
        wiring.connect(m, net.o, link.net_o)
        beat = Signal(24)
        m.d.sync += beat.eq(beat + 1)
        m.d.comb += self.leds.eq(beat[-1] | ((link.errors != 0) << 1))
        return m
