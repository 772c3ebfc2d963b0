"""chatvla2: the command-line front door. It parses arguments and dispatches; the work lives in
models/, export/, runtime/, drivers/, calibration/ and sim/, each imported only when needed."""

__version__ = "0.1.0"
