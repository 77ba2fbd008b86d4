"""An I/O-light wrapper for measuring a core's area and Fmax out of context.

A UP5K in the SG48 package has 39 I/Os, fewer than an 8x8 array's ports. :class:`SerialWrapper` feeds
every input bit of the core from one shift register loaded through a single pin, and folds every
output bit into one pin through a registered XOR tree, so synthesis can neither remove logic (every
output bit is observable) nor constant-fold it (every input bit is a register). The wrapper's own cost
is one flip-flop per input bit plus about one LUT per output bit; :func:`wrapper_overhead` says how
much, so reports can subtract it.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SerialWrapper", "wrapper_overhead"]


def _port_values(core, flow):
    # Every member of the core's signature in the given direction, flattened (streams included).
    # Cast to plain values: len() of a data.View counts elements, not bits.
    return [Value.cast(value) for path, member, value in core.signature.flatten(core) if member.flow == flow]


def wrapper_overhead(core) -> dict:
    """Bits the wrapper adds around ``core``: shift-register flip-flops and XOR-folded outputs."""
    return {"input_bits": sum(len(v) for v in _port_values(core, In)),
            "output_bits": sum(len(v) for v in _port_values(core, Out))}


class SerialWrapper(wiring.Component):
    """Wraps ``core`` behind three pins: ``sin`` (serial data in), ``load`` (shift enable) and ``sout``.

    Parameters
    ----------
    core : wiring.Component
        The design to measure; all of its ports are driven or observed by the wrapper.
    """

    def __init__(self, core):
        self.core = core
        super().__init__({"sin": In(1), "load": In(1), "sout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        inputs = _port_values(core, In)
        outputs = _port_values(core, Out)
        in_bits = sum(len(v) for v in inputs)
        if in_bits:
            shreg = Signal(in_bits)
            with m.If(self.load):
                m.d.sync += shreg.eq(Cat(self.sin, shreg[:-1]))
            offset = 0
            for value in inputs:
                m.d.comb += value.eq(shreg[offset:offset + len(value)])
                offset += len(value)
        out_all = Cat(*outputs)
        folded = Signal()
        m.d.sync += folded.eq(out_all.xor() if len(out_all) else 0)
        m.d.comb += self.sout.eq(folded)
        return m
