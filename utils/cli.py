"""What every entry script shares: `--config/--set` arguments and one-line errors instead of tracebacks."""
from __future__ import annotations

import argparse
import sys

from utils.errors import UserError


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML config (may inherit others via _base_)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value (parsed as YAML); repeatable, e.g. --set optimizer.lr=3e-4")


def run_main(main) -> None:
    """Run `main()`; a UserError becomes `error: <message>` on stderr and exit status 2."""
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
