"""Camera frames -> the vision encoder's input (numpy, no torch).

Frames (H, W, 3) uint8 RGB of any size are resized to the configured size with bilinear
interpolation (half-pixel centres), scaled to [0, 1] and normalised with the CLIP mean and
standard deviation that Qwen2-VL's image processor uses.
"""

from __future__ import annotations

import numpy as np

from models.config import VisionConfig

# OpenAI CLIP's statistics, used by Qwen2-VL's image processor.
IMAGE_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
IMAGE_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) -> (height, width, C) float32, bilinear with half-pixel centres."""
    in_h, in_w = image.shape[:2]
    image = image.astype(np.float32)
    if (in_h, in_w) == (height, width):
        return image

    def sample_points(out_size: int, in_size: int):
        x = (np.arange(out_size, dtype=np.float32) + 0.5) * (in_size / out_size) - 0.5
        x = np.clip(x, 0, in_size - 1)
        low = np.floor(x).astype(np.int64)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, (x - low).astype(np.float32)

    y0, y1, wy = sample_points(height, in_h)
    x0, x1, wx = sample_points(width, in_w)
    top = image[y0][:, x0] * (1 - wx)[None, :, None] + image[y0][:, x1] * wx[None, :, None]
    bottom = image[y1][:, x0] * (1 - wx)[None, :, None] + image[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


def preprocess_images(frames, cfg: VisionConfig) -> np.ndarray:
    """A sequence of `cfg.num_views` RGB frames (H, W, 3) uint8 -> (views, 3, height, width) float32."""
    frames = list(frames)
    if len(frames) != cfg.num_views:
        raise ValueError(f"expected {cfg.num_views} camera view(s), got {len(frames)}")
    out = np.empty((len(frames), 3, cfg.image_height, cfg.image_width), dtype=np.float32)
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"camera view {i}: expected an (H, W, 3) RGB image, got shape {frame.shape}")
        resized = resize_bilinear(frame, cfg.image_height, cfg.image_width) / 255.0
        out[i] = ((resized - IMAGE_MEAN) / IMAGE_STD).transpose(2, 0, 1)
    return out
