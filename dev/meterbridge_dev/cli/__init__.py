"""The ``meterbridge`` command line: local stack, in-process invoke, operators' commands."""
