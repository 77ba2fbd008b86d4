"""Faults on the load path (#16): every trial starts loading one of two models into a loadable overlay
(whose memories still hold the other), injects one fault into that load, and then asks the board what
it runs. A board that says it is loaded must run exactly the model being loaded (bit-exact with its
reference); a board that is not must refuse INFER by name; and the next good load must succeed. Kinds:
a corrupted chunk (CRC), a truncated chunk (silence timeout), a chunk never sent, a chunk sent twice,
all chunks shuffled, a stale chunk of the other model, garbage between chunks, a corrupted COMMIT
checksum, a COMMIT with a short length, INFER in the middle of the load, and a reset (power cut)
in the middle of the load, after which the board must be empty. Bytes reach the link one a cycle (Amaranth's simulator, no UART: the
framing faults on the UART pins are tests/test_link_faults.py's)."""

import random

import numpy as np
import pytest

from lowbit.sim.load_bench import LoadableBoard, exchange, load_chunks
from lowbit.sim.streams import run_sim
from lowbit.sw.data.synthetic import random_mlp
from lowbit.sw.flow.overlay import config_for, load_image
from lowbit.sw.ir.intref import run
from lowbit.sw.link import frames

BUFFER, BATCH, CHUNK, TIMEOUT = 32, 1, 16, 300
MODELS = [random_mlp((8, 6, 3), 4, seed=11), random_mlp((10, 4, 4, 2), 4, seed=12)]
CFG = config_for(MODELS[0], 2, 2, also=MODELS[1:], loadable=True)
IMAGES = [load_image(m, CFG, BATCH, BUFFER) for m in MODELS]
INPUTS = [np.random.default_rng(i).integers(0, 16, (1, m.input_shape[0])) for i, m in enumerate(MODELS)]
REFERENCE = [run(m, x)[0].tolist() for m, x in zip(MODELS, INPUTS)]
KINDS = ("corrupt", "truncate", "skip", "repeat", "shuffle", "stale", "garbage", "bad_checksum", "short_commit",
         "infer_midway", "reset_midway")


def _frame(op, payload=b""):
    return frames.encode_frame(op, payload)


async def _quiet(ctx, link, cycles):
    """Let ``cycles`` pass, taking any response bytes (a truncated frame's TIMEOUT error)."""
    from lowbit.sim.streams import stream_get
    try:
        await stream_get(ctx, link.tx_byte, 1 + 6, timeout=cycles)
    except AssertionError:
        pass


async def trial(ctx, dut, rng, kind, which, counts):
    link = dut.link
    image, other = IMAGES[which], IMAGES[1 - which]
    loads = [_frame(frames.LOAD, c) for c in load_chunks(image, CHUNK)]
    commit = dict(image.commit)
    at = rng.randrange(len(loads))
    sequence = list(range(len(loads)))
    if kind == "shuffle":
        rng.shuffle(sequence)
    for n, i in enumerate(sequence):
        frame = loads[i]
        if n == at and kind == "reset_midway":
            ctx.set(dut.rst, 1)             # a power cut: the host's load is gone with it
            await ctx.tick()
            ctx.set(dut.rst, 0)
            break
        if i == at and kind == "skip":
            continue
        if i == at and kind == "corrupt":
            bad = bytearray(frame)
            bad[rng.randrange(1, len(bad))] ^= 1 << rng.randrange(8)
            op, _ = await exchange(ctx, link, bytes(bad))
            counts["detected"] += op == frames.ERROR
            continue                                     # and never resent
        if i == at and kind == "truncate":
            from lowbit.sim.streams import stream_put
            await stream_put(ctx, link.rx_byte, list(frame[:rng.randrange(1, len(frame))]))
            await _quiet(ctx, link, 2 * TIMEOUT)
            counts["detected"] += 1
            continue
        if i == at and kind == "garbage":
            from lowbit.sim.streams import stream_put
            await stream_put(ctx, link.rx_byte, [rng.randrange(256) for _ in range(rng.randint(1, 12))])
            await _quiet(ctx, link, 2 * TIMEOUT)
        if i == at and kind == "infer_midway":
            op, body = await exchange(ctx, link, _frame(frames.INFER, frames.pack_inputs(INPUTS[which].ravel())))
            counts["detected"] += op == frames.ERROR and body[0] == frames.NOT_LOADED
        await exchange(ctx, link, frame)
        if i == at and kind == "repeat":
            await exchange(ctx, link, frame)
        if i == at and kind == "stale":
            stale = [c for c in load_chunks(other, CHUNK) if c[0] == frame[4]]   # same space, other model
            await exchange(ctx, link, _frame(frames.LOAD, stale[0]))
    if kind == "bad_checksum":
        commit["checksum"] ^= 1 << rng.randrange(32)
    if kind == "short_commit":
        commit["weight_words"] -= 1
    if kind != "reset_midway":
        op, _ = await exchange(ctx, link, _frame(frames.COMMIT, frames.pack_commit(commit)))
        counts["commit_refused"] += op == frames.ERROR
    await check_board(ctx, link, which, counts, "after_fault")
    # The next good load (the driver's: every chunk once, in order) must succeed.
    for frame in loads:
        await exchange(ctx, link, frame)
    op, _ = await exchange(ctx, link, _frame(frames.COMMIT, frames.pack_commit(image.commit)))
    counts["recovered"] += await check_board(ctx, link, which, counts, "after_recovery") == "ran"


async def check_board(ctx, link, which, counts, when):
    _, body = await exchange(ctx, link, _frame(frames.IDENTIFY))
    ident = frames.Identity.unpack(body)
    op, body = await exchange(ctx, link, _frame(frames.INFER, frames.pack_inputs(INPUTS[which].ravel())))
    if ident.loaded:
        good = (ident.config_hash == IMAGES[which].identity.config_hash and op == frames.INFER | frames.RESPONSE and
                frames.unpack_outputs(body, 1, ident.output_count, ident.output_bytes, ident.output_signed)[0][0]
                == REFERENCE[which])
        counts[f"{when}_ran" if good else "half_loaded_runs"] += 1
        return "ran" if good else "bad"
    refused = op == frames.ERROR and body[0] == frames.NOT_LOADED
    counts[f"{when}_refused" if refused else "half_loaded_runs"] += 1
    return "refused" if refused else "bad"


def inject(count, seed):
    dut = LoadableBoard(CFG, BUFFER, BATCH, timeout=TIMEOUT)
    counts = {k: 0 for k in ("injected", "detected", "commit_refused", "after_fault_ran", "after_fault_refused",
                             "half_loaded_runs", "recovered", "after_recovery_ran", "after_recovery_refused", "hung")}
    by_kind = {k: {"ran": 0, "refused": 0} for k in KINDS}

    async def host(ctx):
        ctx.set(dut.link.tx_byte.ready, 0)
        rng = random.Random(seed)
        for n in range(count):
            kind = KINDS[n % len(KINDS)]
            counts["injected"] += 1
            before = counts["after_fault_ran"]
            try:
                await trial(ctx, dut, rng, kind, n % 2, counts)
            except AssertionError:           # no response within the timeout
                counts["hung"] += 1
                return
            by_kind[kind]["ran" if counts["after_fault_ran"] > before else "refused"] += 1

    run_sim(dut, host)
    return counts, by_kind


def _check(counts, by_kind, count):
    assert counts["injected"] == count and counts["hung"] == 0
    assert counts["half_loaded_runs"] == 0
    assert counts["recovered"] == count
    assert counts["after_fault_ran"] + counts["after_fault_refused"] == count
    # Faults that leave the memories wrong are refused (a chunk lost or overwritten whose words the
    # memory already held — the other model's zero padding — loads the right model, and is harmless);
    # repeated and shuffled chunks load the model anyway.
    for kind in ("corrupt", "truncate", "skip", "stale"):
        assert by_kind[kind]["refused"] >= by_kind[kind]["ran"] > -1 and by_kind[kind]["refused"] > 0, kind
    for kind in ("bad_checksum", "short_commit", "reset_midway"):
        assert by_kind[kind]["ran"] == 0, kind
    for kind in ("repeat", "shuffle", "garbage", "infer_midway"):
        assert by_kind[kind]["refused"] == 0, kind


def test_55_load_faults_never_run_a_half_loaded_model():
    counts, by_kind = inject(55, seed=1)        # 5 of each kind, both models (550 in the slow set)
    _check(counts, by_kind, 55)
    print(counts, by_kind)


@pytest.mark.slow
def test_550_load_faults():
    counts, by_kind = inject(550, seed=2)
    _check(counts, by_kind, 550)
    print(counts, by_kind)
