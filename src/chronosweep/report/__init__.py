"""`chronosweep report`: read sweeps and run dirs with Polars, write tables, intervals, plots (see docs/report.md).

Importing the package is cheap (no Polars, matplotlib or Ray): the CLI registers `report` without loading them.
"""

from chronosweep.evaluation.objective import DEFAULT_TERMS

# Mean of these metrics ranks trials unless --objective or the sweeps' own objective says otherwise.
DEFAULT_OBJECTIVE = "+".join(DEFAULT_TERMS)
