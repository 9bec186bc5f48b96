"""Runtime: numpy + onnxruntime (+ tensorrt when present), never torch: bundles, backends, sampling."""
