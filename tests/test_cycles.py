"""The analytic cycle model equals cycles measured in simulation; utilisation of large layers."""

import pytest

from lowbit.sw.data.synthetic import random_cnn, random_dense_model
from lowbit.sw.flow.build import dataflow_cycles, layer_shapes, measure_cycles, plan_build
from lowbit.sw.flow.fold import predict_cycles
from lowbit.sw.ir.model import Model


@pytest.mark.parametrize("k,n,arrays", [
    (128, 64, [(8, 8)]),    # compute-bound
    (256, 64, [(8, 8)]),
    (64, 32, [(8, 8)]),     # input-bound: 64 codes arrive one per cycle
    (100, 30, [(8, 8)]),    # K, N not multiples of R, C
    (20, 40, [(2, 4)]),     # output-bound
    (8, 16, [(8, 1)]),      # one chunk per vector, one column: a result every cycle
    (6, 12, [(8, 2)]),      # one chunk, two columns
])
def test_model_equals_simulation_single_layer(k, n, arrays):
    model = random_dense_model(k, n)
    measured = measure_cycles(model, arrays)["cycles_per_inference"]
    assert measured == predict_cycles(layer_shapes(model), arrays)


@pytest.mark.parametrize("k,n,arrays", [(128, 64, [(8, 8)]), (100, 30, [(8, 8)]), (20, 40, [(2, 4)])])
def test_systolic_engines_keep_the_throughput_and_add_only_latency(k, n, arrays):
    model = random_dense_model(k, n)
    tree = measure_cycles(model, arrays)
    chain = measure_cycles(model, arrays, systolic=True)
    grid = measure_cycles(model, arrays, systolic_2d=True)
    assert chain["cycles_per_inference"] == tree["cycles_per_inference"] == predict_cycles(layer_shapes(model), arrays)
    assert grid["cycles_per_inference"] == tree["cycles_per_inference"]
    rows, cols = arrays[0]
    # The tree has one product-register stage; the chain has R partial-sum stages plus the product
    # register inside every PE.
    assert chain["latency_cycles"] == tree["latency_cycles"] + rows
    assert grid["latency_cycles"] == chain["latency_cycles"] + cols - 1


def test_model_equals_simulation_three_layer_chain():
    a = random_dense_model(48, 24, requant=True, seed=1)
    b = random_dense_model(24, 16, requant=True, seed=2)
    c = random_dense_model(16, 10, seed=3)
    model = Model((48,), a.input_q, [a.layers[0], b.layers[0], c.layers[0]]).validate()
    for arrays in ([(4, 4), (2, 2), (2, 1)], [(8, 2), (3, 3), (1, 1)]):
        assert measure_cycles(model, arrays)["cycles_per_inference"] == predict_cycles(layer_shapes(model), arrays)


def test_steady_state_utilisation_of_a_large_dense_layer_is_at_least_97_percent():
    k, n, (r, c) = 256, 64, (8, 8)
    cycles = measure_cycles(random_dense_model(k, n), [(r, c)])["cycles_per_inference"]
    assert k * n / (r * c * cycles) >= 0.97


@pytest.mark.parametrize("shape,channels,bits,arrays", [
    ((8, 8, 1), (4,), 2, [(2, 2), (4, 1)]),              # the Dense engine, not the buffers, binds
    ((8, 8, 1), (4,), 4, [(9, 4), (8, 2)]),
    ((10, 10, 2), (4, 8), 2, [(4, 2), (8, 4), (4, 1)]),   # two conv + pool stages
])
def test_the_dataflow_figure_for_a_cnn_is_a_lower_bound_of_simulation(shape, channels, bits, arrays):
    model = random_cnn(shape, channels, bits=bits, seed=1)
    bound, exact = dataflow_cycles(model, arrays)
    measured = measure_cycles(model, arrays)["cycles_per_inference"]
    assert not exact
    assert 0.75 * measured <= bound <= measured


def test_a_dense_chain_figure_is_exact():
    model = random_dense_model(48, 24)
    assert dataflow_cycles(model, [(4, 4)]) == (predict_cycles(layer_shapes(model), [(4, 4)]), True)


def test_planning_a_cnn_both_architectures_fit_chooses_and_says_the_figure_is_a_bound():
    # Both fit the UP5K: auto compares the overlay's exact cycles with the dataflow's lower bound (this
    # used to raise "predict_cycles models Dense layers only" out of lowbit plan and lowbit build).
    # Since layer 0 reads patch words (a 9x4 overlay, one step a position) the overlay is the faster.
    model = random_cnn((8, 8, 1), (8,), bits=4, seed=1)
    flow = plan_build(model, "icebreaker", arch="dataflow")
    assert flow["fits"] and flow["cycles_per_inference"] == 576 and "lower bound" in flow["cycles_source"]
    r = plan_build(model, "icebreaker")
    assert r["fits"] and r["architecture"] == "overlay" and r["overlay_array"] == [9, 4]
    assert r["cycles_per_inference"] < 576 and r["cycles_source"] == "cycle model"
    assert r["architecture_reason"].startswith("both fit")
