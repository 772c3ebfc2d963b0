"""The top camera: a pinhole looking straight down at the table, and the 0-1000 image coordinates
the reasoning texts use.

docs/reference/model.md: the math game has "one top camera". Where it hangs is a project choice: 1.0 m above the
table, above (0.31, 0) in the world frame (sim/tasks/kinematics.py), with the scene rectangle
x 0.0..0.62, y -0.38..0.38 (both arm bases, the cards, the whiteboard, the toys) fitted inside the
image whatever its size, centred. Image "up" is +x (away from the robot), image "left" is +y (the
robot's left), so "left", "right", "front" (nearer the robot: lower in the image) and "behind"
read the same from the robot and in the picture.

Box and point coordinates in reasoning texts are integers on 0..1000 across the image width (x)
and down its height (y), as Qwen2-VL writes grounding boxes: independent of the pixel size, so one
text fits the 252x308 and the 56x84 renderings of a scene (the field of view differs with the
aspect ratio, and so do the numbers, by design: they describe the image the model sees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEIGHT_M = 1.0
CENTER = (0.31, 0.0)
SCENE_X = 0.62  # extent of the scene rectangle along x (image height) and y (image width), m
SCENE_Y = 0.76
NORM = 1000


@dataclass(frozen=True)
class Camera:
    height: int
    width: int

    @property
    def focal(self) -> float:
        """Focal length in pixels: the scene rectangle, seen at table height, fits the image."""
        return min(self.height / SCENE_X, self.width / SCENE_Y) * HEIGHT_M

    def scale(self, z: float = 0.0) -> float:
        """Pixels per metre for something at height z (nearer the camera looks bigger)."""
        return self.focal / (HEIGHT_M - z)

    def project(self, points) -> np.ndarray:
        """World points (..., 3) -> pixel coordinates (..., 2) as (u column, v row), floats."""
        p = np.asarray(points, dtype=float)
        s = self.focal / (HEIGHT_M - p[..., 2])
        u = self.width / 2 + s * (CENTER[1] - p[..., 1])
        v = self.height / 2 + s * (CENTER[0] - p[..., 0])
        return np.stack([u, v], axis=-1)

    def unproject(self, uv, z: float = 0.0) -> np.ndarray:
        """Pixel coordinates (..., 2) -> the world points (..., 3) they show at height z."""
        uv = np.asarray(uv, dtype=float)
        s = self.focal / (HEIGHT_M - z)
        y = CENTER[1] - (uv[..., 0] - self.width / 2) / s
        x = CENTER[0] - (uv[..., 1] - self.height / 2) / s
        return np.stack([x, y, np.full_like(x, z)], axis=-1)

    def to_norm(self, uv) -> np.ndarray:
        """Pixel coordinates (..., 2) -> 0..1000 integers (rounded, clipped to the image)."""
        uv = np.asarray(uv, dtype=float)
        n = np.stack([uv[..., 0] / self.width, uv[..., 1] / self.height], axis=-1) * NORM
        return np.clip(np.rint(n), 0, NORM).astype(int)

    def from_norm(self, n) -> np.ndarray:
        """0..1000 coordinates (..., 2) -> pixel coordinates."""
        n = np.asarray(n, dtype=float)
        return np.stack([n[..., 0] * self.width, n[..., 1] * self.height], axis=-1) / NORM

    def norm_box(self, box_px) -> tuple[int, int, int, int]:
        """A pixel box (u1, v1, u2, v2) -> the 0..1000 box written in reasoning texts."""
        a = self.to_norm(np.array(box_px[:2]))
        b = self.to_norm(np.array(box_px[2:]))
        return int(a[0]), int(a[1]), int(b[0]), int(b[1])


def box_iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 for empty or inverted boxes."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    if area_a <= 0 or area_b <= 0:
        return 0.0
    return float(inter / (area_a + area_b - inter))
