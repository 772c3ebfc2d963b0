"""The paper's two tasks, simulated and scored as the paper scores them (issue 10).

ChatVLA-2's math matching game and toy placement (docs/reference/model.md; the slides) on a pair
of ARX X5 arms seen by one top camera, in a fast kinematic mode (no ptys, faster than real time).
No torch: numpy, Pillow and gymnasium only (`pip install -e .[sim]`).

    from chatvla2.sim.tasks.env import TaskEnv
    env = TaskEnv("math_game", "open_world")                      # or "toy_placement", "in_domain"
    observation, info = env.reset(seed=0)
    for action in env.expert_actions():                           # (T, 14) joint targets, 50 Hz
        observation, reward, terminated, truncated, info = env.step(action)
    env.score_reasoning(text)                                     # OCR/math or recognition/affordance

    from chatvla2.sim.tasks.episode import generate_episode                # a demonstration for datasets
    episode = generate_episode("toy_placement", "in_domain", seed=7, height=252, width=308)

    from chatvla2.sim.tasks.image_text import sample                       # stage-1 image-text data
    sample("in_domain", seed=3)  # {"image", "question", "answer", "kind", "split", "seed"}

One concept per file:
- kinematics.py  ARX X5 forward kinematics (docs/reference/arx.md), damped-least-squares IK, the world frame
- camera.py      the top camera (pinhole, straight down) and the 0..1000 image coordinates
- splits.py      in_domain / open_world
- fonts.py       handwriting fonts per split (Pillow's own, DejaVu, others found here)
- render.py      table tops, handwriting, lighting, arms, the per-episode renderer
- props.py       graspable things and the grasp rules (no contact physics)
- world.py       a scene in progress: props, grasp events, arm state, image boxes
- math_game.py   the math matching game: scenes, splits, who picks, the reasoning at each step
- toys.py        the toy catalogue: icons, sizes, which split owns which toy
- toy_placement.py  "Pick the [obj] and place it to [place] of the [target]"
- scoring.py     the reasoning texts: writer, strict parser, the paper's points
- expert.py      scripted 14-D joint trajectories at 50 Hz
- backend.py     how the arms move: `ArmBackend` (reset, apply); `KinematicBackend` (fast, no ptys)
- driver_backend.py  `DriverBackend`: two simulated ARX arms behind ptys through the real drivers, at 50 Hz
- live_camera.py `SceneCamera`: the scene rendered from the arms' measured state, the camera of `run --robot sim --task`
- env.py         `TaskEnv`, one gymnasium.Env for both tasks
- episode.py     `Episode` (the dataset record) and `generate_episode`
- image_text.py  image-text QA samples for co-training

The dataset record (episode.py): Episode(task: str, split: str, seed: int, instruction: str,
frames (T, H, W, 3) uint8, state (T, 14) float32, action (T, 14) float32, reasoning: list of T
str, fps: int = 50); frames[t], state[t] and reasoning[t] are the observation before action[t].
"""
