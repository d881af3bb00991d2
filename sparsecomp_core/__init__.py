"""sparsecomp core: model, training, data and evaluation (PyTorch, no ROS)."""
