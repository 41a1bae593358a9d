"""Power: onboard eclipse prediction and per-orbit energy budgets."""
