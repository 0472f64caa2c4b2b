"""Speed benchmark of the mainline training step: ``python benchmarks/speed.py [--quick] [--p 113] [--json out.json]``.

The same measurements as ``grokscope bench`` (see grokscope/bench.py and docs/speed.md): (a) the full-sequence
reference, (b) grokscope's default path, (c) an ensemble of K seeds, (d) TransformerLens when installed; epochs
per second with and without a test evaluation every epoch, the ratios, the (a)/(b) agreement, FLOP rates and
the scaling with p. For TransformerLens: ``pip install 'grokscope[bench]'``.
"""

import argparse
import sys

from grokscope.bench import register
from grokscope.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="benchmarks/speed.py")
    register(parser.add_subparsers(dest="command"))
    parser.parse_args(
        ["bench", *sys.argv[1:]]
    )  # validate (and --help) here; run through the CLI for its error handling
    sys.exit(main(["bench", *sys.argv[1:]]))
