"""What the model expects, written once (no torch): the model configuration and presets
(`config.py`), the tokenizer (`tokenizer.py`), the prompt layout and M-RoPE positions
(`prompt.py`), image preprocessing (`preprocess.py`), normalisation (`normalization.py`), the
stages a policy step reports (`stage_timer.py`), the bundle format (`bundle.py`) and the
staged-directory writer bundles and checkpoints use (`staging.py`), and the sample scene and
instruction (`scene.py`).

Imported by models/, export/, runtime/, calibration/ and sim/; it imports none of them (only
`drivers.profiles`, for the arms' joint limits).
"""
