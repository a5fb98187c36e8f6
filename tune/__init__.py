"""Hyperparameter tuning over one search space (search_space.json, read by space.py):
SageMaker's tuner (scripts/sagemaker_tune.py) and, on this machine, Optuna."""
