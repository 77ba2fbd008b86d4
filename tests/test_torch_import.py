"""PyTorch nn.Sequential import (skipped where torch is not installed: CI and the core install do not
need it). The float net must compute what torch computes; the quantized model keeps the accuracy."""

import numpy as np
import pytest

from lowbit.sw.errors import LowbitError

torch = pytest.importorskip("torch")
nn = torch.nn


def _train(model, x_nchw, y, epochs=30):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.tensor(x_nchw, dtype=torch.float32), torch.tensor(y)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_sequential_matches_torch_and_quantizes(kind):
    from lowbit.sw.digits import digits_split
    from lowbit.sw.intref import predict
    from lowbit.sw.posttrain import quantize_net
    from lowbit.sw.torch_import import from_torch
    xtr, ytr, xte, yte = digits_split()
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1),
                              nn.Linear(32, 10))
    else:
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    model = _train(model, xtr.transpose(0, 3, 1, 2), ytr)
    net = from_torch(model, (1, 8, 8))
    with torch.no_grad():
        ref = model(torch.tensor(xte.transpose(0, 3, 1, 2), dtype=torch.float32)).numpy()
    np.testing.assert_allclose(net.forward(xte), ref, rtol=1e-4, atol=1e-4)   # float model vs float32 torch
    float_acc = np.mean(np.argmax(ref, 1) == yte)
    q = quantize_net(net, xtr, weight_bits=8, act_bits=8, per_channel=False, calib="minmax")
    assert np.mean(predict(q, xte)[1] == yte) >= float_acc - 0.01


def test_unsupported_module_is_named():
    from lowbit.sw.torch_import import from_torch
    with pytest.raises(LowbitError, match="module 1 is a Sigmoid, which lowbit cannot import"):
        from_torch(nn.Sequential(nn.Flatten(), nn.Sigmoid()), (64,))
