"""cocotb drivers and monitors for ``amaranth.lib.stream`` ports in Verilog from ``amaranth.back.verilog``.

Amaranth flattens a stream port ``i`` into ``i__valid``, ``i__ready`` and ``i__payload`` (one vector
holding the whole payload layout). :class:`StreamSource` drives such a port following the stream rules
(``valid`` never waits for ``ready``; payload held while stalled), :class:`StreamSink` takes beats from
one with back-pressure. Both insert seeded random idle/stall cycles so handshakes are exercised, and
both touch the simulator only at clock edges, which keeps Python's per-cycle cost low.
"""

from __future__ import annotations

import random

from cocotb.triggers import FallingEdge, ReadOnly

__all__ = ["StreamSource", "StreamSink", "pack_lanes", "unpack_lanes"]


def pack_lanes(values, bits: int) -> int:
    """Pack integers (two's complement, ``bits`` each) into one vector, element 0 in the low bits,
    as ``amaranth.lib.data.ArrayLayout`` does.

    >>> hex(pack_lanes([1, -1, 2], 4))
    '0x2f1'
    """
    word, mask = 0, (1 << bits) - 1
    for k, v in enumerate(values):
        word |= (int(v) & mask) << (bits * k)
    return word


def unpack_lanes(word: int, bits: int, count: int, signed: bool) -> list[int]:
    """Inverse of :func:`pack_lanes`.

    >>> unpack_lanes(0x2f1, 4, 3, signed=True)
    [1, -1, 2]
    """
    out, mask = [], (1 << bits) - 1
    for k in range(count):
        v = (word >> (bits * k)) & mask
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out


class _StreamEnd:
    """The three flattened signals of stream port ``name`` of ``dut``, the clock and a seeded RNG."""

    def __init__(self, dut, name: str, clk, seed: int):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk = clk
        self.rng = random.Random(seed)


class StreamSource(_StreamEnd):
    """Drives ``<name>__valid``/``__payload`` of ``dut``; ``idle`` is the probability of an idle cycle
    between beats.

    Timing: everything happens at the falling edge (the design is rising-edge triggered): drive the
    inputs, let combinational logic settle (``ReadOnly``), then read ``ready``; ``valid & ready`` there
    is exactly what the next rising edge captures.
    """

    def __init__(self, dut, name: str, clk, idle: float = 0.0, seed: int = 0):
        super().__init__(dut, name, clk, seed)
        self.idle = idle
        self.valid.value = 0

    async def send(self, words):
        """Send each integer of ``words`` as one beat; returns once the last one has been captured."""
        for word in words:
            while self.idle and self.rng.random() < self.idle:
                await FallingEdge(self.clk)
                self.valid.value = 0
            while True:
                await FallingEdge(self.clk)
                self.payload.value = int(word)
                self.valid.value = 1
                await ReadOnly()
                if int(self.ready.value):
                    break
        await FallingEdge(self.clk)  # the last beat is captured at the rising edge before this one
        self.valid.value = 0


class StreamSink(_StreamEnd):
    """Takes beats from ``<name>__valid``/``__payload``, driving ``__ready``; ``stall`` is the
    probability of refusing a beat in a cycle. Same falling-edge timing as :class:`StreamSource`."""

    def __init__(self, dut, name: str, clk, stall: float = 0.0, seed: int = 1):
        super().__init__(dut, name, clk, seed)
        self.stall = stall
        self.ready.value = 0

    async def receive(self, count: int, timeout_cycles: int = 1_000_000) -> list[int]:
        """Collect ``count`` beats (payload integers); raises AssertionError after ``timeout_cycles``
        cycles without a beat, so a hung design fails instead of blocking the run."""
        beats, quiet = [], 0
        while len(beats) < count:
            await FallingEdge(self.clk)
            ready = 0 if (self.stall and self.rng.random() < self.stall) else 1
            self.ready.value = ready
            await ReadOnly()
            if ready and int(self.valid.value):
                beats.append(int(self.payload.value))
                quiet = 0
            else:
                quiet += 1
                assert quiet < timeout_cycles, f"no beat for {timeout_cycles} cycles after {len(beats)} of {count}"
        await FallingEdge(self.clk)
        self.ready.value = 0
        return beats
