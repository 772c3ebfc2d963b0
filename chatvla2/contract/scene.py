"""A deterministic sample observation of the paper's math matching game, made in numpy.

A whiteboard with an equation and three cards on a table, drawn with a 3x5 pixel font, the
instruction of the authors' data, and a bimanual ARX state at rest. Used by the demo and tests
until a trained model and the simulated tasks replace it.
"""

from __future__ import annotations

import numpy as np

INSTRUCTION = "Answer the question and pick the card with the correct answer."

# 3x5 glyphs, one string per row.
GLYPHS = {
    "0": ["###", "#.#", "#.#", "#.#", "###"], "1": [".#.", "##.", ".#.", ".#.", "###"],
    "2": ["###", "..#", "###", "#..", "###"], "3": ["###", "..#", "###", "..#", "###"],
    "4": ["#.#", "#.#", "###", "..#", "..#"], "5": ["###", "#..", "###", "..#", "###"],
    "6": ["###", "#..", "###", "#.#", "###"], "7": ["###", "..#", "..#", "..#", "..#"],
    "8": ["###", "#.#", "###", "#.#", "###"], "9": ["###", "#.#", "###", "..#", "###"],
    "-": ["...", "...", "###", "...", "..."], "+": ["...", ".#.", "###", ".#.", "..."],
    "=": ["...", "###", "...", "###", "..."],
}


def draw_text(image: np.ndarray, text: str, top: int, left: int, scale: int, color) -> None:
    for k, character in enumerate(text):
        glyph = np.array([[c == "#" for c in row] for row in GLYPHS[character]])
        block = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        x = left + k * 4 * scale
        region = image[top : top + block.shape[0], x : x + block.shape[1]]
        region[block[: region.shape[0], : region.shape[1]]] = color


def math_game_frame(equation: str = "56-42", cards: tuple[str, str, str] = ("4", "6", "1")) -> np.ndarray:
    """A 240x320 RGB frame from the top camera."""
    frame = np.empty((240, 320, 3), dtype=np.uint8)
    frame[:] = (150, 110, 80)  # the wooden table
    frame[10:90, 60:260] = (245, 245, 240)  # the whiteboard
    draw_text(frame, equation, top=30, left=80, scale=8, color=(20, 20, 120))
    for i, card in enumerate(cards):
        left = 40 + i * 100
        frame[140:210, left : left + 50] = (250, 250, 250)
        draw_text(frame, card, top=155, left=left + 13, scale=8, color=(10, 10, 10))
    return frame


def sample_observation(num_views: int, state_dim: int = 14) -> tuple[list[np.ndarray], str, np.ndarray]:
    """(frames, instruction, state). Extra views are the same scene, slightly shifted in brightness."""
    base = math_game_frame()
    frames = [np.clip(base.astype(np.int16) - 12 * v, 0, 255).astype(np.uint8) for v in range(num_views)]
    return frames, INSTRUCTION, np.zeros(state_dim, dtype=np.float32)
