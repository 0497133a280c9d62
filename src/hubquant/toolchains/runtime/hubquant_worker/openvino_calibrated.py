"""optimum-cli's OpenVINO export, with calibration texts in place of a data set name.

``optimum-cli export openvino --dataset`` takes only the names of data sets it
downloads from the Hub, while optimum-intel's weight compression also accepts
a list of strings. This module parses the same command line with optimum-cli's
own parser and runs its export command with the list, so a data-aware export
differs from a data-free one only in where the samples come from.

Usage: ``python -m hubquant_worker.openvino_calibrated TEXTS.json ARGS...``,
with ARGS as for ``optimum-cli export openvino`` (model, options, output).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    from optimum.commands.export.openvino import OVExportCommand, parse_args_openvino

    texts = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if not texts or not all(isinstance(text, str) and text.strip() for text in texts):
        raise SystemExit(f"{argv[0]} must contain a non-empty list of non-empty strings")
    parser = argparse.ArgumentParser(prog="optimum-cli export openvino")
    parse_args_openvino(parser)
    # The placeholder name passes the command line's checks for data-aware
    # options; the texts replace it before the export reads it.
    args = parser.parse_args([*argv[1:], "--dataset", "calibration-texts", "--num-samples", str(len(texts))])
    args.dataset = texts
    # run() reads only self.args; the constructor would also register a subcommand.
    command = OVExportCommand.__new__(OVExportCommand)
    command.args = args
    command.run()


if __name__ == "__main__":
    main(sys.argv[1:])
