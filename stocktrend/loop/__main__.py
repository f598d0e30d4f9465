"""``python -m stocktrend.loop retrain ...`` / ``score ...``: the loop's commands as the entry point of a Ray Job
(``ray job submit --working-dir . -- python -m stocktrend.loop retrain``) or a cron line; same flags and exit codes as
``stocktrend retrain`` / ``stocktrend score``."""

import sys

from stocktrend.cli import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("retrain", "score", "--help", "-h"):
        print("usage: python -m stocktrend.loop {retrain,score} [OPTIONS]  (see stocktrend retrain --help)",
              file=sys.stderr)
        sys.exit(2)
    sys.argv = ["stocktrend", *sys.argv[1:]]
    main()
