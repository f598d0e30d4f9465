"""The model zoo (``zoo.py``: every model's spec). Light on purpose: importing the package imports no network code, so
the command line can name the default model without loading torch."""

DEFAULT_KIND = "hybrid"  # the model a command trains when none is named (the seeds' hybrid network)
