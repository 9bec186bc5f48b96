"""gvtool: train a compact VAE-GAN, export it to ONNX/TensorRT, run it on the edge."""

__version__ = "0.1.0"
