"""Trained PyTorch modules -> verified ONNX graphs -> quantized TensorRT engines (not built yet)."""
