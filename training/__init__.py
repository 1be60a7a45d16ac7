"""Training entry points (Ray Tune, RLlib) that read their settings from `configs/` and run locally or on a
cluster with `--address`."""
