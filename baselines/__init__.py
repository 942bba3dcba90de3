"""TensorFlow baselines (tf_full_softmax, tf_sampled_softmax). TensorFlow is imported only when a baseline runs."""
