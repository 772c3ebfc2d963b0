"""chatvla2: the command-line front door. It parses arguments and dispatches; the work lives in
contract/, models/, export/, runtime/, drivers/, calibration/ and sim/, each imported only when
its command runs. Nothing imports this package."""

__version__ = "0.1.0"
