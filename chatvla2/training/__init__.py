"""Training: the paper's two-stage recipe (docs/reference/model.md, point 5) at CPU scale, `chatvla2 train`.

Why a package of its own: training needs the PyTorch model (models/) and the datasets on disk
(sim/dataset.py), and neither of those may know about the other (models/ and sim/ sit on different
branches of the layers, README "Architecture"). It is not on the robot either: runtime/ and
drivers/ never import it. So it sits above both, beside calibration/ (siblings that do not import
each other), below the front door (chatvla2/cli.py only names `training.cli:main`).

    training/config.py   TrainConfig: every knob and its default; `chatvla2 train`'s options are its fields
    training/data.py     datasets -> robot frames and image-text samples, normalisation statistics,
                         the seeded 1:3 image-text : robot batch mixture
    training/trainer.py  the loop: AdamW, warm-up + cosine, clipping, checkpoints, exact resume
    training/cli.py      `main(config)`, and `python -m chatvla2.training.cli` without the front door
"""
