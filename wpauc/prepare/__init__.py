"""wpauc.prepare: the offline pipeline from public raw data to the MiniOneRec layout, and its
commands ``wpauc prepare-amazon`` and ``wpauc build-sids``.

Modules: ``records`` (JSON-lines dumps, bad-record log), ``amazon`` (Amazon Reviews 2018
reading, cleaning and filtering), ``samples`` (k-core, samples, chronological split),
``layout`` (writing the CSVs and index files), ``sids`` (residual k-means SIDs over sentence
embeddings), ``commands`` (the two commands as typed functions), ``command_line`` (their
jsonargparse command lines).
"""

from wpauc.prepare.command_line import (
    COMMANDS,
    run_command,
)
from wpauc.prepare.commands import SIDOptions, build_sids_command, prepare_amazon_command

__all__ = [
    "COMMANDS",
    "SIDOptions",
    "build_sids_command",
    "prepare_amazon_command",
    "run_command",
]
