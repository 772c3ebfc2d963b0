"""ARX arm drivers: SLCAN link, motor frame codecs, arm profiles, the 500 Hz controller, the arm.

Robot-side code: imports numpy, pyserial and python-can only (never torch, never `models`).
"""
