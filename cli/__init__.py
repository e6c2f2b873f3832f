"""The `basetrigger` command line (console script `basetrigger = cli.main:main`).

`cli.main` builds the argparse parser; every `cli/*_cmd.py` module adds one command group
through its `register(subparsers)` function.
"""
