"""`chronosweep report`: read sweeps and run dirs with Polars, write tables, intervals, plots (see docs/report.md).

Importing the package is cheap (no Polars, matplotlib or Ray): the CLI registers `report` without loading them.
"""

# Mean of these metrics ranks trials unless --objective says otherwise.
DEFAULT_OBJECTIVE = "reliability+generalization+locality"
