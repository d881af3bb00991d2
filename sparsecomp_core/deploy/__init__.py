"""Deployment: the fixed-shape inference path (static state buffers, LiDAR in a
bucket; for torch.compile, CUDA graphs and ONNX), its runners and the ONNX export
(``python -m sparsecomp_core.export``). See docs/deployment.md."""
