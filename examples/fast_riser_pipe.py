"""The fast-riser classifier as an external program, for ``--pipe-through``.

It reads alerts as JSON Lines on stdin and answers one line per alert: the annotated alert,
or null.  Any language can do this; this one reuses the Python function.

    kcp cp ztf:ztf_20180725_programid1 risers.jsonl \\
        --pipe-through 'python examples/fast_riser_pipe.py' --out-schema extended.avsc
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fast_riser import classify


def main() -> None:
    for line in sys.stdin:
        sys.stdout.write(json.dumps(classify(json.loads(line))) + "\n")
        sys.stdout.flush()  # kcp waits for each answer before sending the next alert


if __name__ == "__main__":
    main()
