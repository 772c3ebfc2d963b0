"""A short GIF of one episode: the camera view, enlarged, with the reasoning in force written under it.

The demo records the frames it is shown (`add`), keeping one every `every` control steps (at 50 Hz,
every 5th is 10 frames a second of robot time, played at that rate), and `save` writes them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from chatvla2.contract.embodiment import CONTROL_HZ  # the GIF plays in robot time


class EpisodeGif:
    def __init__(self, every: int = 5, scale: int = 3, text_lines: int = 7) -> None:
        if every < 1 or scale < 1:
            raise ValueError(f"every and scale must be >= 1, got {every} and {scale}")
        self.every, self.scale, self.text_lines = every, scale, text_lines
        self.frames: list[Image.Image] = []
        self._font = ImageFont.load_default()

    def add(self, step: int, image: np.ndarray, reasoning: str, caption: str = "") -> None:
        """Keep the frame of control step `step` if it is one of every `every`th."""
        if step % self.every:
            return
        view = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize(
            (image.shape[1] * self.scale, image.shape[0] * self.scale), Image.NEAREST)
        width = view.width
        chars = max(20, width // 6)  # the default bitmap font is ~6 px wide
        lines = [f"{caption}  step {step} ({step / CONTROL_HZ:.1f} s)"]
        lines += textwrap.wrap(reasoning or "(no reasoning)", chars)[: self.text_lines - 1]
        panel = 14 * self.text_lines + 8
        frame = Image.new("RGB", (width, view.height + panel), (16, 16, 20))
        frame.paste(view, (0, 0))
        draw = ImageDraw.Draw(frame)
        for i, line in enumerate(lines):
            draw.text((4, view.height + 4 + 14 * i), line, fill=(240, 240, 200) if i else (150, 200, 255), font=self._font)
        self.frames.append(frame)

    def save(self, path: str | Path) -> Path:
        """Write the GIF (its folder made if needed); the file appears whole or not at all."""
        if not self.frames:
            raise ValueError("no frames recorded: nothing to write")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        duration_ms = round(1000 * self.every / CONTROL_HZ)
        self.frames[0].save(partial, format="GIF", save_all=True, append_images=self.frames[1:], duration=duration_ms,
                            loop=0, optimize=True)
        partial.replace(path)
        return path
