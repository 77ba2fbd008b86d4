import os

import pytest

# Verilator models of the tests are compiled with -O1, not its -Os: about a third less g++ time for
# the few inputs a test sends (tests/test_flash_boot.py + the overlay board test: 105 -> 76 s of CPU).
# Optimisation levels do not change what a Verilated model computes; `lowbit run --sim` keeps -Os.
if "OPT_FAST" not in os.environ.get("MAKEFLAGS", ""):
    os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " OPT_FAST=-O1").strip()


@pytest.fixture
def cli(capsys):
    """Run the lowbit CLI in-process; returns (exit code, stdout, stderr)."""
    from lowbit.sw.cli import main

    def run(*argv):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse exits on usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def cli_quiet():
    """The lowbit CLI in-process for fixtures wider than a test (capsys is per test): (exit code,
    stdout, stderr)."""
    import contextlib
    import io
    from lowbit.sw.cli import main

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:
                code = exc.code
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture(scope="module")
def digits():
    """The shipped digits split: ``(x_train, y_train, x_test, y_test)``."""
    from lowbit.sw.data.digits import digits_split
    return digits_split()


#: Test modules that take minutes (synthesis, place-and-route, Verilator builds, proofs), largest first,
#: from ``pytest --durations=80`` on the CI machine (2 cores). They run first, so that the long ones
#: overlap each other and the short ones fill the gaps at the end, instead of one xdist worker
#: finishing a build alone. (Order only: every test still runs.)
HEAVY_FIRST = ("test_reweight", "test_cli_flow", "test_cli_load", "test_flash_boot", "test_load_faults",
               "test_overlay_board", "test_formal_stages", "test_formal_overlay", "test_engine_cocotb",
               "test_overlay_load", "test_link_faults", "test_formal_engine", "test_overlay", "test_frames_board",
               "test_qat", "test_cli_tools", "test_cli", "test_verilator_flow")
#: Modules whose tests share a build that a module fixture makes (minutes): xdist gives all of a
#: module's tests (per parameter when True) to one worker; split, both workers built it.
SHARED_BUILDS = {"test_cli_load": False, "test_reweight": True, "test_cli_flow": False}


def _module(nodeid: str) -> str:
    return nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(_module(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Each test is a unit of work, one worker takes the next as it frees up, but the tests of a
    :data:`SHARED_BUILDS` module are one unit. (``--dist loadgroup`` would do this with marks, but with
    pytest 9 its group names never reach the scheduler.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedBuildScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = _module(nodeid)
            if module not in SHARED_BUILDS:
                return nodeid
            param = nodeid.rsplit("[", 1)[-1] if SHARED_BUILDS[module] and nodeid.endswith("]") else ""
            return f"{module}[{param}"

    return SharedBuildScheduling(config, log)
