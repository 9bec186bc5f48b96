"""Export: torch -> ONNX bundle, validation, precision variants, TensorRT engines."""
