"""sparsecomp models: plain nn.Modules with build_*(cfg) factories."""
