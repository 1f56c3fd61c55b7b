"""Model code: features contract, preprocessing, networks and the Trainer's run_fn."""
