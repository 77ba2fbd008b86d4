"""Async testbench helpers for ``amaranth.lib.stream`` interfaces in Amaranth's simulator.

One testbench per stream end (``sim.add_testbench``); both helpers insert seeded random idle or stall
cycles, so every handshake path is exercised.
"""

from __future__ import annotations

import random

from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "run_sim"]


async def stream_put(ctx, stream, payloads, idle: float = 0.0, rng=None):
    """Send each payload (an int or a value the payload shape accepts) as one beat."""
    rng = rng or random.Random(0)
    for payload in payloads:
        while idle and rng.random() < idle:
            ctx.set(stream.valid, 0)
            await ctx.tick()
        ctx.set(_raw(stream.payload) if isinstance(payload, int) else stream.payload, payload)
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, count: int, stall: float = 0.0, rng=None, timeout: int = 100_000):
    """Receive ``count`` beats; returns the payloads as integers (raw bits for layout payloads,
    signed values for signed shapes)."""
    rng = rng or random.Random(1)
    beats, quiet = [], 0
    while len(beats) < count:
        ready = 0 if (stall and rng.random() < stall) else 1
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, _raw(stream.payload))
        if ready and valid:
            beats.append(payload)
            quiet = 0
        else:
            quiet += 1
            if quiet > timeout:
                raise AssertionError(f"no beat for {timeout} cycles after {len(beats)} of {count}")
    ctx.set(stream.ready, 0)
    return beats


def _raw(payload):
    # Layout-shaped payloads (data.View) are set and read as their raw bits: integers in, integers out.
    return payload.as_value() if hasattr(payload, "as_value") else payload


def run_sim(dut, *testbenches, vcd=None):
    """Run ``dut`` with a 1 MHz clock and the given async testbenches; returns the simulator."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return sim
