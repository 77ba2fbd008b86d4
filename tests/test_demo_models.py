"""Demo networks: the binary digits MLP is trained binary and survives 1/1 quantization exactly."""

import numpy as np
import pytest

from lowbit.sw.data.demo_models import binary_mlp_forward, train_binary_mlp
from lowbit.sw.ir.intref import predict, run
from lowbit.sw.ir.model import Thresholds
from lowbit.sw.quant.posttrain import quantize_net


@pytest.fixture(scope="module")
def bnn(digits):
    xtr, ytr, _, _ = digits
    net = train_binary_mlp(xtr, ytr)
    return net, quantize_net(net, xtr, weight_bits=1, act_bits=1)


def test_training_is_deterministic(digits):
    xtr, ytr, _, _ = digits
    a = train_binary_mlp(xtr[:300], ytr[:300], epochs=3)
    b = train_binary_mlp(xtr[:300], ytr[:300], epochs=3)
    for la, lb in zip(a.layers, b.layers):
        if hasattr(la, "weight"):
            assert np.array_equal(la.weight, lb.weight) and np.array_equal(la.bias, lb.bias)


def test_quantized_binary_net_is_the_trained_net_bit_for_bit(bnn, digits):
    net, model = bnn
    _, _, xte, _ = digits
    hidden, logits = model.compute_layers()
    assert hidden.weight_q.binary and isinstance(hidden.requant, Thresholds) and logits.requant is None
    oracle = binary_mlp_forward(net, xte, model.meta["input_offset"])
    assert np.array_equal(run(model, model.quantize_input(xte)), oracle)


def test_binary_net_accuracy(bnn, digits):
    """Measured 81.3 % on the 540 test images (PTQ of the float MLP to 1/1 gives about 26 %)."""
    _, model = bnn
    _, _, xte, yte = digits
    acc = float(np.mean(predict(model, xte)[1] == yte))
    assert acc >= 0.75, acc
