"""The loadable host link (LOAD / COMMIT, docs/protocol.md) with an overlay engine behind it, in
Amaranth's simulator, frame by frame: every refusal has its error code and leaves the board as it was;
retried, repeated and reordered chunks load the same model; INFER never runs an empty or half-loaded
overlay; a committed model gives the reference's outputs."""

import numpy as np
import pytest

from lowbit.hw.overlay import OverlayConfig
from lowbit.sim.load_bench import LoadableBoard, exchange, load_chunks
from lowbit.sim.streams import run_sim
from lowbit.sw.data.synthetic import random_mlp
from lowbit.sw.flow.overlay import config_for, load_image
from lowbit.sw.ir.intref import run
from lowbit.sw.link import frames

BUFFER, BATCH = 64, 2
MODEL = random_mlp((16, 8, 4), 4, seed=4)
OTHER = random_mlp((12, 6, 6, 3), 4, seed=9)
CFG = config_for(MODEL, 4, 2, also=(OTHER,), loadable=True)


def simulate(script, cfg=CFG):
    dut = LoadableBoard(cfg, BUFFER, BATCH)
    log = []

    async def host(ctx):
        ctx.set(dut.link.tx_byte.ready, 0)      # responses wait until read (an early ERROR too)
        await script(ctx, dut.link, log)

    run_sim(dut, host)
    return log


def error(body):
    return frames.ERROR_NAMES[body[0]]


def infer_frame(model, codes):
    return frames.encode_frame(frames.INFER, frames.pack_inputs(np.asarray(codes).ravel()))


def test_empty_board_identifies_as_empty_and_refuses_infer():
    async def script(ctx, link, log):
        log.append(await exchange(ctx, link, frames.encode_frame(frames.IDENTIFY)))
        log.append(await exchange(ctx, link, infer_frame(MODEL, np.zeros(16, int))))
    (op, body), (op2, body2) = simulate(script)
    ident = frames.Identity.unpack(body)
    assert ident.capacity["loaded"] == 0 and ident.config_hash == 0 and ident.input_count == 0
    assert ident.capacity["rows"] == CFG.rows and ident.capacity["weight_depth"] == CFG.weight_depth
    assert ident.capacity["input_buffer"] == BUFFER and ident.capacity["chunk_bytes"] == BUFFER
    assert (op2, error(body2)) == (frames.ERROR, "no model loaded")


@pytest.mark.parametrize("store", ["bram", "spram"])
def test_load_commit_then_infer_is_the_reference_and_identify_names_the_model(store):
    cfg = OverlayConfig(**{**CFG.__dict__, "weight_store": store})
    image = load_image(MODEL, cfg, BATCH, BUFFER)
    codes = np.random.default_rng(0).integers(0, 16, (BATCH, 16))

    async def script(ctx, link, log):
        for payload in load_chunks(image, 24):
            log.append(await exchange(ctx, link, frames.encode_frame(frames.LOAD, payload)))
        log.append(await exchange(ctx, link, frames.encode_frame(frames.COMMIT, frames.pack_commit(image.commit))))
        log.append(await exchange(ctx, link, frames.encode_frame(frames.IDENTIFY)))
        log.append(await exchange(ctx, link, infer_frame(MODEL, codes)))
    log = simulate(script, cfg)
    assert all(op == frames.LOAD | frames.RESPONSE for op, _ in log[:-3])
    assert log[-3][0] == frames.COMMIT | frames.RESPONSE
    ident = frames.Identity.unpack(log[-2][1])
    assert ident == image.identity.__class__(**{**image.identity.__dict__, "capacity": ident.capacity})
    assert ident.capacity["loaded"] == 1
    op, body = log[-1]
    values, _ = frames.unpack_outputs(body, BATCH, ident.output_count, ident.output_bytes, ident.output_signed)
    assert np.array_equal(values, run(MODEL, codes))


def test_repeated_reordered_and_corrupted_chunks_still_load_the_model():
    image = load_image(OTHER, CFG, BATCH, BUFFER)
    loads = load_chunks(image, 16)
    rng = np.random.default_rng(1)
    order = list(rng.permutation(len(loads))) + list(rng.choice(len(loads), 4))     # shuffled, some twice
    codes = rng.integers(0, 16, (BATCH, 12))

    async def script(ctx, link, log):
        for i in order:
            bad = bytearray(frames.encode_frame(frames.LOAD, loads[i]))
            bad[7] ^= 0x10                                   # a corrupted copy first: refused, writes nothing
            log.append(("bad", await exchange(ctx, link, bytes(bad))))
            log.append(("good", await exchange(ctx, link, frames.encode_frame(frames.LOAD, loads[i]))))
        log.append(("commit", await exchange(ctx, link, frames.encode_frame(frames.COMMIT,
                                                                           frames.pack_commit(image.commit)))))
        log.append(("infer", await exchange(ctx, link, infer_frame(OTHER, codes))))
    log = simulate(script)
    assert all(error(body) == "bad CRC" for kind, (op, body) in log if kind == "bad")
    assert all(op == frames.LOAD | frames.RESPONSE for kind, (op, _) in log if kind == "good")
    assert log[-2][1][0] == frames.COMMIT | frames.RESPONSE
    values, _ = frames.unpack_outputs(log[-1][1][1], BATCH, 3, 4)
    assert np.array_equal(values, run(OTHER, codes))


def test_half_loaded_or_wrong_checksum_never_runs():
    image = load_image(MODEL, CFG, BATCH, BUFFER)
    loads = load_chunks(image, 24)
    wrong = {**image.commit, "checksum": image.commit["checksum"] ^ 1}

    async def script(ctx, link, log):
        for payload in loads:
            await exchange(ctx, link, frames.encode_frame(frames.LOAD, payload))
        await exchange(ctx, link, frames.encode_frame(frames.COMMIT, frames.pack_commit(image.commit)))
        log.append(await exchange(ctx, link, infer_frame(MODEL, np.zeros(16, int))))        # runs
        # A new load starts (half of it): the board is empty until a good COMMIT.
        await exchange(ctx, link, frames.encode_frame(frames.LOAD, loads[-1]))
        log.append(await exchange(ctx, link, infer_frame(MODEL, np.zeros(16, int))))
        log.append(await exchange(ctx, link, frames.encode_frame(frames.COMMIT, frames.pack_commit(wrong))))
        log.append(await exchange(ctx, link, infer_frame(MODEL, np.zeros(16, int))))
        log.append(await exchange(ctx, link, frames.encode_frame(frames.COMMIT, frames.pack_commit(image.commit))))
        log.append(await exchange(ctx, link, infer_frame(MODEL, np.zeros(16, int))))
    ran, empty, bad_commit, still_empty, commit, ran_again = simulate(script)
    assert ran[0] == frames.INFER | frames.RESPONSE
    assert error(empty[1]) == "no model loaded"
    assert error(bad_commit[1]) == "model checksum differs"
    assert error(still_empty[1]) == "no model loaded"
    assert commit[0] == frames.COMMIT | frames.RESPONSE and ran_again == ran


@pytest.mark.parametrize("payload, expected", [
    (frames.pack_load(4, 0, bytes(4)), "load outside the memory"),               # no such space
    (frames.pack_load(2, CFG.weight_depth - 1, bytes(16)), "load outside the memory"),   # past the end
    (frames.pack_load(3, 0, bytes(CFG.word_bits(3) // 8 + 1)), "load outside the memory"),   # not whole words
    (frames.pack_load(1, 0, b""), "bad length"),                                 # no data
    (frames.pack_load(0, 0, bytes(BUFFER + 1)), "bad length"),                   # more than a chunk
])
def test_bad_loads_are_refused_by_name(payload, expected):
    async def script(ctx, link, log):
        log.append(await exchange(ctx, link, frames.encode_frame(frames.LOAD, payload)))
        log.append(await exchange(ctx, link, frames.encode_frame(frames.COUNTERS)))
    (op, body), (_, counters) = simulate(script)
    assert (op, error(body)) == (frames.ERROR, expected)
    assert frames.unpack_counters(counters)["errors"] == 1


@pytest.mark.parametrize("field, value", [("weight_words", CFG.weight_depth + 1), ("input_count", 0),
                                          ("input_count", BUFFER + 1), ("output_bytes", 5), ("program_words", 0),
                                          ("identity_bytes", 1000)])
def test_commits_a_board_cannot_run_are_refused(field, value):
    image = load_image(MODEL, CFG, BATCH, BUFFER)
    fields = {**image.commit, field: value}

    async def script(ctx, link, log):
        log.append(await exchange(ctx, link, frames.encode_frame(frames.COMMIT, frames.pack_commit(fields))))
        log.append(await exchange(ctx, link, frames.encode_frame(frames.IDENTIFY)))
    (op, body), (_, ident) = simulate(script)
    assert (op, error(body)) == (frames.ERROR, "bad length")
    assert frames.Identity.unpack(ident).capacity["loaded"] == 0
