"""What the model expects, written once (no torch): the model configuration and presets
(`config.py`), the tokenizer (`tokenizer.py`), the prompt layout and M-RoPE positions
(`prompt.py`), image preprocessing (`preprocess.py`), normalisation (`normalization.py`), the
stages a policy step reports (`stage_timer.py`), the bundle format (`bundle.py`) and the
staged-directory writer bundles and checkpoints use (`staging.py`), the sample scene and
instruction (`scene.py`), and the robot: the control rate and the 14-D bimanual layout
(`embodiment.py`). Also what every command shares: the user-error types (`errors.py`) and a
command's options as a frozen dataclass turned into argparse arguments and back
(`command_config.py`, stdlib only).

Imported by models/, export/, runtime/, calibration/ and sim/; it imports none of them (only
`drivers.profiles`, for the arms' joints and joint limits).
"""
