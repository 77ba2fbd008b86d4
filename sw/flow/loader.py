"""Load a model into a built overlay (``lowbit load``, ``lowbit run --model``): the model laid out for
the overlay its build record describes, sent through the link as LOAD chunks and a COMMIT
(docs/protocol.md), to a board on a serial port or to the simulated board.

An overlay build runs any model that fits its memories and formats (``lowbit build --also`` sizes it
for more models than the one it is built with); a dataflow build runs only its own.
"""

from __future__ import annotations

import time

from ..errors import LowbitError
from .overlay import LoadImage
from .record import image_for_build, overlay_config

__all__ = ["image_for_build", "load_serial", "needs_load", "load"]


def needs_load(identity, image: LoadImage) -> bool:
    """Whether a board that answered ``identity`` must be loaded to run ``image``'s model."""
    return not identity.loaded or identity.config_hash != image.identity.config_hash


def load_serial(device, image: LoadImage, record: dict, progress=lambda done, total: None) -> dict:
    """Load ``image`` into the board behind ``device`` (a :class:`lowbit.sw.link.host.Device`), after
    checking the board holds this build's overlay; returns what it took."""
    from ...hw.accel import overlay_hash
    ident = device.identify()
    if ident.capacity is None:
        raise LowbitError("the board runs a dataflow bitstream, which cannot load models",
                          "flash the overlay build's bitstream first")
    expected = overlay_hash(overlay_config(record["overlay"]))
    if ident.capacity["overlay_hash"] != expected:
        raise LowbitError(f"the board holds another overlay (hash {ident.capacity['overlay_hash']:08x}, this build "
                          f"folder's is {expected:08x})", "flash this build's bitstream first")
    t0 = time.monotonic()
    new = device.load(image.spaces, image.word_bytes, image.commit, ident.capacity["chunk_bytes"], progress=progress)
    if new.config_hash != image.identity.config_hash:
        raise LowbitError("the board committed the model but identifies as another one",
                          "this is a lowbit bug: please report it")
    return {"bytes": image.total_bytes, "seconds": round(time.monotonic() - t0, 3),
            "config_hash": f"{new.config_hash:08x}"}


def load(build_dir, model, *, port: str | None = None, progress=lambda message: None) -> dict:
    """Load ``model`` into the overlay built in ``build_dir``: on the board at serial ``port`` (it keeps
    the model until reset), or with ``port=None`` into the simulated board, where the result says what
    the load took (the simulation ends with it: ``lowbit.sw.flow.simulate.simulate_build(...,
    model=model)`` loads and runs data in one go). LowbitError, before anything is sent, if the model
    does not fit the build."""
    import numpy as np
    from .record import load_build
    _, record = load_build(build_dir)
    image = image_for_build(record, model)
    progress(f"{image.total_bytes} bytes: identity {len(image.spaces[0])}, program {len(image.spaces[1])}, "
             f"weights {len(image.spaces[2])}, parameters {len(image.spaces[3])}")
    if port is None:
        from .simulate import simulate_build
        res = simulate_build(build_dir, np.zeros((0, image.identity.input_count), dtype=np.int64), model=model,
                             progress=progress)
        ident = res["identity"]
        if ident["config_hash"] != image.identity.config_hash or not ident["capacity"]["loaded"]:
            raise LowbitError("the simulated board did not take the model", "this is a lowbit bug: please report it")
        cycles = res["load"]["sim_cycles"]
        result = {"bytes": image.total_bytes, "sim_cycles": cycles,
                  "seconds_at_clock": round(cycles / record["clock_hz"], 4),
                  "config_hash": f"{ident['config_hash']:08x}", "wall_seconds": res["wall_seconds"], "target": "sim"}
    else:
        from ..link.host import Device, SerialTransport
        device = Device(SerialTransport(port, record["baud"]), timeout_s=2.0)
        last = [0]

        def sent(done, total):
            if done - last[0] >= max(1, total // 10) or done == total:
                progress(f"sent {done}/{total} bytes")
                last[0] = done
        result = {**load_serial(device, image, record, sent), "target": port}
    result["link_seconds"] = round(image.total_bytes * 10 / record["baud"], 4)
    return result
