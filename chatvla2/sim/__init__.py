"""Simulation: a simulated ARX arm behind a pseudo-terminal that answers SLCAN byte for byte as the
hardware does (`arm_sim.py`, with injected faults `faults.py`), simulated arms as processes
(`processes.py`), and `chatvla2 run --robot sim` / `chatvla2 arm --sim` on them (`robot.py`,
`cli.py`). The paper's tasks will live here (issue 10).
"""
