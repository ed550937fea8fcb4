"""The typer command line: one module per verb, parsing and rendering only."""
