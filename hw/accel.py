"""The board core: UART receiver -> frame handler -> network -> frame handler -> UART transmitter.

:class:`AccelCore` has the ports :class:`lowbit.boards.targets.BoardTop` expects (``rx``, ``tx``,
``leds``): LED 0 blinks as a heartbeat, LED 1 lights once the link has seen a bad frame.
"""

from __future__ import annotations

import json
import zlib

import numpy as np

from amaranth import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw.link import frames
from ..sw.ir.model import Conv2d, Dense, Model
from .dense import LOGIT_BITS
from .hostlink import HostLink, LoadSpec
from .network import Network, _code_shape
from .overlay import OverlayEngine
from .serial import UARTRx, UARTTx, divisor_for

__all__ = ["AccelCore", "architecture", "architecture_difference", "architecture_hash", "identity_for",
           "overlay_capacity", "overlay_hash", "load_spec", "CHUNK_BYTES"]

#: Most data bytes of one LOAD frame (capped by the input buffer, where chunks are staged).
CHUNK_BYTES = 1024


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


def overlay_hash(cfg) -> int:
    """Hash of an overlay's configuration (the capacity record's ``overlay_hash``). Fields added after
    boards were built leave it out while they hold their defaults (``patch``, ``wide``: never set in a
    loadable overlay), so a board built before them still matches its build."""
    import dataclasses
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if not (k in ("patch", "wide") and not v)}
    return zlib.crc32(json.dumps(fields, sort_keys=True).encode())


def _mask(widths) -> int:
    return sum(1 << (b - 1) for b in set(widths))


def overlay_capacity(cfg, input_buffer: int) -> dict:
    """The capacity record (:data:`lowbit.sw.link.frames.CAPACITY_FIELDS`) of an overlay built with
    ``cfg`` and an input buffer of ``input_buffer`` bytes; ``loaded`` is 0 (the link sets it live)."""
    acts, weights = cfg.act_formats, cfg.weight_formats
    return {"loadable": 1, "loaded": 0, "overlay_hash": overlay_hash(cfg), "rows": cfg.rows, "cols": cfg.cols,
            "act_unsigned": _mask(b for b, s, binary in acts if not s and not binary),
            "act_signed": _mask(b for b, s, binary in acts if s and not binary),
            "act_binary": int(any(binary for _, _, binary in acts)),
            "weight_signed": _mask(b for b, binary in weights if not binary),
            "weight_binary": int(any(binary for _, binary in weights)),
            "act_depth": cfg.act_depth, "max_layers": cfg.max_layers, "max_thresholds": cfg.max_thresholds,
            "acc_bits": cfg.acc_bits, "mult_bits": cfg.mult_bits,
            "identity_depth": identity_depth(cfg),
            "program_depth": cfg.program_depth, "program_word_bytes": frames.value_bytes(cfg.word_bits(1)),
            "weight_depth": cfg.weight_depth, "weight_word_bytes": frames.value_bytes(cfg.word_bits(2)),
            "param_depth": cfg.param_depth, "param_word_bytes": frames.value_bytes(cfg.word_bits(3)),
            "input_buffer": input_buffer, "chunk_bytes": min(CHUNK_BYTES, input_buffer)}


def identity_depth(cfg) -> int:
    """Bytes of an overlay's identity space: the IDENTIFY head, L and ``max_layers`` layer records."""
    return frames.IDENTIFY_HEAD_BYTES + 1 + frames.LAYER_BYTES * cfg.max_layers


def load_spec(cfg, input_buffer: int, out_depth: int, max_batch: int, initial=None) -> LoadSpec:
    """The :class:`~lowbit.hw.hostlink.LoadSpec` of an overlay board."""
    return LoadSpec(word_bits=(8, cfg.word_bits(1), cfg.word_bits(2), cfg.word_bits(3)),
                    depths=(identity_depth(cfg), cfg.program_depth, cfg.weight_depth, cfg.param_depth),
                    capacity=overlay_capacity(cfg, input_buffer), input_buffer=input_buffer,
                    out_depth=out_depth, max_batch=max_batch, initial=initial)


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
        If ``OverlayConfig.loadable``, so is the link (:class:`~lowbit.hw.hostlink.LoadSpec`): the
        memories start with ``model`` (or empty if ``descriptors`` is empty) and other models can be
        loaded.
    input_buffer : int, optional
        Overlay: bytes of the input buffer (default: ``model``'s inputs x ``max_batch``); a loaded model
        runs batches of at most ``input_buffer // inputs``.
    flash_boot : int, optional
        Loadable overlay: after reset, load the model blob at this SPI flash offset
        (:class:`~lowbit.hw.flashboot.FlashBoot`); the core gains the ``flash_*`` pins.
    """

    def __init__(self, model: Model, arrays, clk_hz: float, baud: float, max_batch: int = 8,
                 timeout_bytes: int = 32, *, reweightable: bool = False, rom_init: dict | None = None,
                 rom_block: int = 256, mult: str = "lut", overlay=None, input_buffer: int | None = None,
                 flash_boot: int | None = None):
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
        self.input_buffer = input_buffer or self.identity.input_count * max_batch
        if overlay is not None and overlay[0].loadable:
            cfg = overlay[0]
            self.identity = identity_for(model, self.arrays, min(max_batch, self.input_buffer // self.identity.input_count))
            self.identity = frames.Identity(**{**self.identity.__dict__,
                                               "capacity": overlay_capacity(cfg, self.input_buffer)})
        self.flash_boot = flash_boot
        ports = {"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(2)}
        if flash_boot is not None:
            if overlay is None or not overlay[0].loadable:
                raise ValueError("only a loadable overlay boots its model from flash")
            ports.update({"flash_cs": Out(1), "flash_clk": Out(1), "flash_copi": Out(1), "flash_cipo": In(1)})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        if self.overlay is not None and not self.overlay[0].loadable:
            m.submodules.net = net = OverlayEngine(*self.overlay)
            code_shape = net.i.payload.shape()
        elif self.overlay is not None:
            cfg, descriptors, weights, params = self.overlay
            if cfg.weight_store == "spram":
                # SPRAM has no initial contents: the board starts empty and is loaded through the link.
                descriptors, weights, params = [], [], []
            net = OverlayEngine(cfg, descriptors, weights, params)
            initial = None
            if descriptors:
                ident = self.identity
                initial = (ident.pack_model(), {
                    "identity_bytes": len(ident.pack_model()), "program_words": len(descriptors) * cfg.program_word_count,
                    "weight_words": len(weights), "param_words": len(params), "input_count": ident.input_count,
                    "output_count": ident.output_count, "output_bytes": ident.output_bytes, "checksum": 0})
            spec = load_spec(cfg, self.input_buffer, max(16, self.identity.output_count * self.max_batch),
                             self.max_batch, initial)
            m.submodules.rx = rx = UARTRx(self.divisor)
            m.submodules.tx = tx = UARTTx(self.divisor)
            m.submodules.link = link = HostLink(None, net.i.payload.shape(), net.o.payload.shape(), self.timeout,
                                                load=spec)
            # Empty (or being loaded): the engine is held in reset and the link owns its memories.
            m.submodules.net = ResetInserter(~link.loaded)(net)
            for name in ("sel", "space", "addr", "lane", "data", "we", "re"):
                m.d.comb += getattr(net, f"ld_{name}").eq(getattr(link, f"ld_{name}"))
            m.d.comb += link.ld_rdata.eq(net.ld_rdata)
            if self.flash_boot is None:
                return self._wire(m, rx, tx, link, net)
            # Boot: the flash feeds the link (its answers are dropped) until the blob is through.
            from .flashboot import FlashBoot
            m.submodules.boot = boot = FlashBoot(self.flash_boot)
            m.d.comb += [self.flash_cs.eq(boot.cs), self.flash_clk.eq(boot.sck), self.flash_copi.eq(boot.copi),
                         boot.cipo.eq(self.flash_cipo), boot.link_busy.eq(link.busy)]
            with m.If(boot.booting):
                m.d.comb += [link.rx_byte.valid.eq(boot.rx.valid), link.rx_byte.payload.eq(boot.rx.payload),
                             boot.rx.ready.eq(link.rx_byte.ready), link.tx_byte.ready.eq(1)]
            with m.Else():
                m.d.comb += [link.rx_byte.valid.eq(rx.o.valid), link.rx_byte.payload.eq(rx.o.payload),
                             rx.o.ready.eq(link.rx_byte.ready), tx.i.valid.eq(link.tx_byte.valid),
                             tx.i.payload.eq(link.tx_byte.payload), link.tx_byte.ready.eq(tx.i.ready)]
            return self._wire(m, rx, tx, link, net, streams=False)
        else:
            m.submodules.net = net = Network(self.model, self.arrays, reweightable=self.reweightable,
                                             rom_init=self.rom_init, rom_block=self.rom_block, mult=self.mult)
            code_shape = _code_shape(self.model.input_q)
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.link = link = HostLink(self.identity, code_shape, net.o.payload.shape(), self.timeout)
        return self._wire(m, rx, tx, link, net)

    def _wire(self, m, rx, tx, link, net, streams=True):
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), link.mac_cycles.eq(net.mac_cycles)]
        if streams:
            wiring.connect(m, rx.o, link.rx_byte)
            wiring.connect(m, link.tx_byte, tx.i)
        wiring.connect(m, link.net_i, net.i)
        wiring.connect(m, net.o, link.net_o)
        beat = Signal(24)
        m.d.sync += beat.eq(beat + 1)
        m.d.comb += self.leds.eq(beat[-1] | ((link.errors != 0) << 1))
        return m
