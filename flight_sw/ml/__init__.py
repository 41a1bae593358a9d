"""ML: the onboard model, inference, training and model slots."""
