"""The ChatVLA-2 model in PyTorch: vision encoder, Qwen2-style MoE language model, ScaleDP action head.

It knows nothing of how it is exported or run on the robot.
"""
