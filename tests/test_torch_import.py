"""PyTorch import. With torch installed (not in CI: the core install does not need it): the float net
must compute what torch computes and the quantized model keep the accuracy. Without torch, a fake
``torch`` module checks how files are loaded: ``weights_only=True`` unless ``--trust-pickle``, and the
safe state-dict format against a NumPy reference of PyTorch's layer semantics."""

import ast
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from lowbit.sw.errors import LowbitError


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _train(torch, model, x_nchw, y, epochs=30):
    nn = torch.nn
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.tensor(x_nchw, dtype=torch.float32), torch.tensor(y)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_sequential_matches_torch_and_quantizes(torch, kind):
    from lowbit.sw.data.digits import digits_split
    from lowbit.sw.ir.intref import predict
    from lowbit.sw.quant.posttrain import quantize_net
    from lowbit.sw.importers.pytorch import from_torch
    nn = torch.nn
    xtr, ytr, xte, yte = digits_split()
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1),
                              nn.Linear(32, 10))
    else:
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    model = _train(torch, model, xtr.transpose(0, 3, 1, 2), ytr)
    net = from_torch(model, (1, 8, 8))
    with torch.no_grad():
        ref = model(torch.tensor(xte.transpose(0, 3, 1, 2), dtype=torch.float32)).numpy()
    np.testing.assert_allclose(net.forward(xte), ref, rtol=1e-4, atol=1e-4)   # float model vs float32 torch
    float_acc = np.mean(np.argmax(ref, 1) == yte)
    q = quantize_net(net, xtr, weight_bits=8, act_bits=8, per_channel=False, calib="minmax")
    assert np.mean(predict(q, xte)[1] == yte) >= float_acc - 0.01


def test_unsupported_module_is_named(torch):
    from lowbit.sw.importers.pytorch import from_torch
    nn = torch.nn
    with pytest.raises(LowbitError, match="module 1 is a Sigmoid, which lowbit cannot import"):
        from_torch(nn.Sequential(nn.Flatten(), nn.Sigmoid()), (64,))


# -- without torch: how .pt files are loaded ---------------------------------------------------------

class FakeTorch(types.ModuleType):
    """Stands in for torch: ``load`` records its keyword arguments and returns (or raises) ``result``."""

    def __init__(self, result):
        super().__init__("torch")
        self.result, self.calls = result, []

    def load(self, path, **kwargs):
        self.calls.append(kwargs)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


@pytest.fixture
def fake_torch(monkeypatch):
    def install(result):
        fake = FakeTorch(result)
        monkeypatch.setitem(sys.modules, "torch", fake)
        return fake
    return install


def _cnn_state(seed=0):
    """A small CNN's lowbit_layers and state dict in PyTorch layout (NCHW, Linear (out, in))."""
    rng = np.random.default_rng(seed)
    layers = [{"type": "conv2d", "padding": [1, 1]}, {"type": "batchnorm", "eps": 1e-3}, {"type": "relu"},
              {"type": "maxpool2d", "kernel": [2, 2]}, {"type": "dropout"}, {"type": "flatten"}, {"type": "dense"}]
    state = {"0.weight": rng.normal(size=(4, 2, 3, 3)), "0.bias": rng.normal(size=4),
             "1.weight": rng.uniform(0.5, 2, 4), "1.bias": rng.normal(size=4), "1.running_mean": rng.normal(size=4),
             "1.running_var": rng.uniform(0.5, 2, 4), "1.num_batches_tracked": np.array(3),
             "6.weight": rng.normal(size=(5, 4 * 3 * 3)), "6.bias": rng.normal(size=5)}
    return layers, state


def _reference_nchw(state, x):
    """PyTorch's semantics of that CNN in NumPy, NCHW throughout (independent of lowbit's layout code)."""
    w, b = state["0.weight"], state["0.bias"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, _, h, wd = x.shape
    y = np.zeros((n, 4, h, wd))
    for o in range(4):
        for i in range(h):
            for j in range(wd):
                y[:, o, i, j] = np.sum(xp[:, :, i:i + 3, j:j + 3] * w[o], axis=(1, 2, 3)) + b[o]
    g, beta, mean, var = (state[f"1.{k}"][None, :, None, None] for k in ("weight", "bias", "running_mean", "running_var"))
    y = np.maximum((y - mean) / np.sqrt(var + 1e-3) * g + beta, 0)
    y = y.reshape(n, 4, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
    return y.reshape(n, -1) @ state["6.weight"].T + state["6.bias"]


def test_state_dict_format_computes_what_pytorch_would(fake_torch, tmp_path):
    from lowbit.sw.importers.pytorch import load_torch
    layers, state = _cnn_state()
    fake = fake_torch({"lowbit_layers": layers, "state_dict": state})
    net = load_torch(tmp_path / "m.pt", (2, 6, 6))
    assert fake.calls == [{"map_location": "cpu", "weights_only": True}]
    x = np.random.default_rng(1).normal(size=(3, 2, 6, 6))
    np.testing.assert_allclose(net.forward(x.transpose(0, 2, 3, 1)), _reference_nchw(state, x), rtol=1e-9, atol=1e-9)


def test_pickled_module_is_refused_without_trust_pickle(fake_torch, tmp_path):
    from lowbit.sw.importers.pytorch import load_torch
    fake = fake_torch(pickle.UnpicklingError("Weights only load failed. ... GLOBAL torch.nn.Sequential"))
    with pytest.raises(LowbitError, match="lowbit does not unpickle .*--trust-pickle"):
        load_torch(tmp_path / "m.pt", (64,))
    assert fake.calls[0]["weights_only"] is True


def test_trust_pickle_is_the_only_way_to_unpickle(fake_torch, tmp_path):
    from lowbit.sw.importers.pytorch import load_torch
    fake = fake_torch(object())          # what unpickling a module would give
    with pytest.raises(LowbitError):     # the fake has no torch.nn; the point is the argument
        load_torch(tmp_path / "m.pt", (64,), trust_pickle=True)
    assert fake.calls == [{"map_location": "cpu", "weights_only": False}]


@pytest.mark.parametrize("content, words", [
    ({"0.weight": np.zeros((10, 64))}, "a bare state dict does not say which layers"),
    ({"lowbit_layers": [{"type": "lstm"}], "state_dict": {}}, "lowbit_layers[0] (lstm) is not a layer"),
    ({"lowbit_layers": [{"type": "dense"}], "state_dict": {}}, "state_dict has no '0.weight'"),
    ({"lowbit_layers": [{"type": "dense"}], "state_dict": {"0.weight": np.zeros(3)}}, "expected 2 dimensions"),
    ({"lowbit_layers": [{"type": "conv2d", "stride": [0, 1]}], "state_dict": {"0.weight": np.zeros((1, 1, 1, 1))}},
     "stride [0, 1] must be two integers"),
    ([1, 2], "holds a list, not lowbit's layer list"),
])
def test_bad_state_dict_files_are_one_line(fake_torch, tmp_path, content, words):
    from lowbit.sw.importers.pytorch import load_torch
    fake_torch(content)
    with pytest.raises(LowbitError) as info:
        load_torch(tmp_path / "m.pt", (1, 8, 8))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_quantize_reads_a_state_dict_pt_and_trust_pickle_is_explicit(cli, fake_torch, tmp_path):
    layers, state = _cnn_state()
    fake = fake_torch({"lowbit_layers": layers, "state_dict": state})
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).uniform(0, 1, (20, 6, 6, 2)))
    (tmp_path / "m.pt").write_bytes(b"stand-in")
    code, out, err = cli("quantize", str(tmp_path / "m.pt"), "--input-shape", "2,6,6", "--calib-data",
                         str(tmp_path / "c.npz"), "-o", str(tmp_path / "m.lbm"))
    assert code == 0, err
    assert (tmp_path / "m.lbm").is_file() and fake.calls[-1]["weights_only"] is True
    cli("quantize", str(tmp_path / "m.pt"), "--input-shape", "2,6,6", "--trust-pickle", "--calib-data",
        str(tmp_path / "c.npz"), "-o", str(tmp_path / "m2.lbm"))
    assert fake.calls[-1]["weights_only"] is False
    code, out, _ = cli("quantize", "--help")
    assert code == 0 and "RUNS CODE FROM THE FILE" in " ".join(out.split())


def _unsafe_torch_loads(source: str) -> list:
    """Line numbers of ``torch.load`` calls that do not pass ``weights_only=True`` and are not in the body
    of an ``if trust_pickle:``."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def in_trust_pickle_branch(node):
        while node in parents:
            parent = parents[node]
            if isinstance(parent, ast.If) and isinstance(parent.test, ast.Name) and parent.test.id == "trust_pickle" \
                    and node in parent.body:
                return True
            node = parent
        return False

    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
            flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
            safe = isinstance(flag, ast.Constant) and flag.value is True
            if not safe and not in_trust_pickle_branch(node):
                bad.append(node.lineno)
    return bad


def test_no_torch_load_without_weights_only_true_outside_trust_pickle():
    root = Path(__file__).resolve().parents[1]
    sources = {p: p.read_text() for d in ("sw", "hw", "sim", "boards") for p in sorted((root / d).glob("**/*.py"))}
    assert sum(s.count("torch.load(") for s in sources.values()) >= 2
    assert {str(p): _unsafe_torch_loads(s) for p, s in sources.items() if _unsafe_torch_loads(s)} == {}
    # The check itself catches what it must.
    assert _unsafe_torch_loads("torch.load(p)\ntorch.load(p, weights_only=False)\n"
                               "if trust_pickle:\n    pass\nelse:\n    torch.load(p, weights_only=False)\n") == [1, 2, 6]
    assert _unsafe_torch_loads("if trust_pickle:\n    torch.load(p, weights_only=False)\n") == []
