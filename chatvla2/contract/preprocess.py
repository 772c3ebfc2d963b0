"""Camera frames -> the vision encoder's input (numpy, no torch): the one implementation that
the reference model, the export's calibration and the runtime all use.

Frames (H, W, 3) uint8 RGB of any size are resized to the configured size with bilinear
interpolation (half-pixel centres), scaled to [0, 1] and normalised with the CLIP mean and
standard deviation that Qwen2-VL's image processor uses.
"""

from __future__ import annotations

import numpy as np

from chatvla2.contract.config import VisionConfig
from chatvla2.contract.errors import InvalidInput

# OpenAI CLIP's statistics, used by Qwen2-VL's image processor.
IMAGE_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
IMAGE_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def _sample_points(out_size: int, in_size: int):
    x = (np.arange(out_size, dtype=np.float32) + 0.5) * (in_size / out_size) - 0.5
    x = np.clip(x, 0, in_size - 1)
    low = np.floor(x).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (x - low).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) -> (height, width, C) float32, bilinear with half-pixel centres."""
    in_h, in_w = image.shape[:2]
    image = image.astype(np.float32)
    if (in_h, in_w) == (height, width):
        return image
    y0, y1, wy = _sample_points(height, in_h)
    x0, x1, wx = _sample_points(width, in_w)
    top = image[y0][:, x0] * (1 - wx)[None, :, None] + image[y0][:, x1] * wx[None, :, None]
    bottom = image[y1][:, x0] * (1 - wx)[None, :, None] + image[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


def pixels_shape(cfg: VisionConfig) -> tuple[int, int, int, int]:
    """The vision engine's input shape: (views, 3, height, width)."""
    return (cfg.num_views, 3, cfg.image_height, cfg.image_width)


def preprocess_images(frames, cfg: VisionConfig, out: np.ndarray | None = None) -> np.ndarray:
    """`cfg.num_views` RGB frames (H, W, 3) uint8 -> (views, 3, height, width) float32, written
    into `out` when given (the runtime reuses one buffer). Every frame is checked: a wrong count,
    shape or pixel type is an error naming the view."""
    frames = list(frames)
    if len(frames) != cfg.num_views:
        raise InvalidInput(f"expected {cfg.num_views} camera view(s), got {len(frames)}")
    shape = pixels_shape(cfg)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"output buffer {out.dtype} {out.shape}, expected float32 {shape}")
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 2 or frame.shape[1] < 2:
            raise InvalidInput(f"camera view {i}: expected an (H, W, 3) RGB image of at least 2 x 2 pixels, got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise InvalidInput(f"camera view {i}: expected uint8 pixels (0..255), got {frame.dtype}")
        resized = resize_bilinear(frame, cfg.image_height, cfg.image_width) / 255.0
        out[i] = ((resized - IMAGE_MEAN) / IMAGE_STD).transpose(2, 0, 1)
    return out
