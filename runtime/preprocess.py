"""Camera frames -> the vision engine's input, in numpy; numerically the same as
`models/preprocess.py` (tests compare them): bilinear resize with half-pixel centres, scale to
[0, 1], normalise with the CLIP mean and standard deviation that Qwen2-VL's image processor uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# OpenAI CLIP's statistics, used by Qwen2-VL's image processor.
IMAGE_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
IMAGE_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@dataclass(frozen=True)
class ImageSpec:
    """What the vision engine expects: `num_views` frames of `height` x `width` (manifest model_config.vision)."""

    num_views: int
    height: int
    width: int

    @classmethod
    def from_model_config(cls, model_config: dict) -> "ImageSpec":
        v = model_config["vision"]
        return cls(int(v["num_views"]), int(v["image_height"]), int(v["image_width"]))


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


def preprocess_images(frames, spec: ImageSpec, out: np.ndarray | None = None) -> np.ndarray:
    """`spec.num_views` RGB frames (H, W, 3) uint8 -> (views, 3, height, width) float32."""
    frames = list(frames)
    if len(frames) != spec.num_views:
        raise ValueError(f"expected {spec.num_views} camera view(s), got {len(frames)}")
    shape = (len(frames), 3, spec.height, spec.width)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"output buffer {out.dtype} {out.shape}, expected float32 {shape}")
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 2 or frame.shape[1] < 2:
            raise ValueError(f"camera view {i}: expected an (H, W, 3) RGB image of at least 2 x 2 pixels, got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"camera view {i}: expected uint8 pixels (0..255), got {frame.dtype}")
        resized = resize_bilinear(frame, spec.height, spec.width) / 255.0
        out[i] = ((resized - IMAGE_MEAN) / IMAGE_STD).transpose(2, 0, 1)
    return out
