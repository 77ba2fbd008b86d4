import pytest


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


@pytest.fixture(scope="module")
def digits():
    """The shipped digits split: ``(x_train, y_train, x_test, y_test)``."""
    from lowbit.sw.data.digits import digits_split
    return digits_split()
