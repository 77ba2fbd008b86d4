"""The serial-port path of the driver (pyserial) against a software board on a pseudo-terminal.

The board side speaks the protocol of lowbit.sw.link.frames and answers INFER from the integer reference;
it corrupts the first INFER response's CRC so the driver's retry path runs too, and answers COUNTERS with
distinct values in every field (or, told to, with a reply one byte short) so the decoding is checked.
"""

import os
import threading

import numpy as np
import pytest

from lowbit.boards.targets import board_device, platform_class
from lowbit.hw.accel import identity_for
from lowbit.sw.link import frames
from lowbit.sw.flow.build import fold_model
from lowbit.sw.errors import LowbitError
from lowbit.sw.data.digits import digits_split, train_mlp
from lowbit.sw.link.host import Device, SerialTransport
from lowbit.sw.ir.intref import run
from lowbit.sw.quant.posttrain import quantize_net

serial = pytest.importorskip("serial")


#: What the software board's COUNTERS says: a different value, with different bytes, in every field.
COUNTERS = {"cycles": 0x11223344, "mac_cycles": 0x55667788, "frames": 0x99AA, "errors": 0xBBCC}


def software_board(fd, model, identity, stop, counters_payload=frames.pack_counters(COUNTERS)):
    parser = frames.FrameParser()
    corrupted = False
    while not stop.is_set():
        try:
            data = os.read(fd, 4096)
        except OSError:
            return
        for op, body in parser.feed(data):
            if op == frames.IDENTIFY:
                reply = frames.encode_frame(op | 0x80, identity.pack())
            elif op == frames.COUNTERS:
                reply = frames.encode_frame(op | 0x80, counters_payload)
            elif op == frames.INFER:
                codes = np.frombuffer(body, dtype=np.uint8).astype(np.int64).reshape(-1, *model.input_shape)
                out = run(model, codes).reshape(len(codes), -1)
                payload = b"".join(b"".join(int(v).to_bytes(identity.output_bytes, "little", signed=True) for v in row)
                                   + bytes([int(np.argmax(row))]) for row in out)
                reply = bytearray(frames.encode_frame(op | 0x80, payload))
                if not corrupted:            # first answer damaged in transit: the host must retry
                    reply[-1] ^= 0xFF
                    corrupted = True
                reply = bytes(reply)
            else:
                reply = frames.encode_frame(frames.ERROR, bytes([frames.BAD_OPCODE]))
            os.write(fd, reply)


@pytest.fixture(scope="module")
def digits():
    xtr, ytr, xte, _ = digits_split()
    model = quantize_net(train_mlp(xtr, ytr, epochs=5), xtr)
    # The arrays an iCEBreaker build of this model has (what its IDENTIFY would report).
    arrays = [(f.rows, f.cols) for f in fold_model(model, board_device(platform_class("icebreaker")())).layers]
    return model, identity_for(model, arrays, max_batch=8), xte


def on_a_pty(model, identity, test, **board_kwargs):
    """Run ``test(device)`` against the software board on a pseudo-terminal."""
    master, slave = os.openpty()
    stop = threading.Event()
    board = threading.Thread(target=software_board, args=(master, model, identity, stop), kwargs=board_kwargs,
                             daemon=True)
    board.start()
    try:
        test(Device(SerialTransport(os.ttyname(slave), 1_000_000), timeout_s=0.5))
    finally:
        stop.set()
        os.close(slave)
        os.close(master)


def test_driver_over_a_serial_port(digits):
    model, identity, xte = digits

    def test(device):
        assert device.identify() == identity
        codes = model.quantize_input(xte[:20]).reshape(20, -1)
        values, argmax = device.infer(codes, batch=8)
        ref = run(model, codes.reshape(20, *model.input_shape))
        assert np.array_equal(values, ref) and np.array_equal(argmax, ref.argmax(1))
        assert device.read_counters() == COUNTERS

    on_a_pty(model, identity, test)


def test_a_counters_reply_of_the_wrong_length_is_refused(digits):
    model, identity, _ = digits

    def test(device):
        with pytest.raises(LowbitError, match="COUNTERS response has 11 bytes, expected 12"):
            device.read_counters()

    on_a_pty(model, identity, test, counters_payload=frames.pack_counters(COUNTERS)[:-1])


def test_missing_port_is_a_clear_error():
    with pytest.raises(LowbitError, match="cannot open serial port /dev/nonexistent-lowbit"):
        SerialTransport("/dev/nonexistent-lowbit", 115200)


def _build_folder(tmp_path, model, arrays):
    import json
    folder = tmp_path / "build"
    folder.mkdir()
    model.save(folder / "model.lbm")
    (folder / "build.json").write_text(json.dumps({
        "board": "icebreaker", "arch": "dataflow", "overlay": None, "family": "ice40", "arrays": [list(a) for a in arrays], "clock_hz": 12e6,
        "baud": 1_000_000, "max_batch": 8, "timeout_bytes": 32, "reweightable": False, "rom_seed": 1,
        "rom_block": None, "mult": "lut", "requant_dsp": True, "pll": False, "divisor": 12}))
    return folder


@pytest.mark.parametrize("same", [True, False])
def test_run_port_checks_the_boards_identity_against_the_build(digits, tmp_path, cli, same):
    """lowbit run --port: a board that answers IDENTIFY with this build's hash runs the data set; one
    that holds another design is refused before any input is sent."""
    import json
    model, identity, xte = digits
    arrays = [(l["rows"], l["cols"]) for l in identity.layers]
    folder = _build_folder(tmp_path, model, arrays)
    np.savez(tmp_path / "d.npz", x=xte[:16])
    board_model = model
    if not same:
        xtr, ytr, _, _ = digits_split()
        board_model = quantize_net(train_mlp(xtr, ytr, hidden=16, epochs=2), xtr)
    board_identity = identity_for(board_model, arrays if same else [(4, 1), (2, 1)], max_batch=8)

    master, slave = os.openpty()
    stop = threading.Event()
    board = threading.Thread(target=software_board, args=(master, board_model, board_identity, stop), daemon=True)
    board.start()
    try:
        code, out, err = cli("run", str(folder), "--port", os.ttyname(slave), "--data", str(tmp_path / "d.npz"),
                             "--json")
    finally:
        stop.set()
        os.close(slave)
        os.close(master)
    if same:
        assert code == 0, err
        assert json.loads(out)["mismatches"] == 0 and json.loads(out)["n"] == 16
    else:
        assert code == 2 and "holds another design (architecture hash" in err
