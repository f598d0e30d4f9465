"""Ray Tune + Optuna + ASHA searches (``search.py``), their options, space, trials and results."""

# What a search can rank trials by (``stocktrend tune --metric``); kept here, light, for the command line and the loop.
SEARCH_METRICS = ("val_loss", "val_rank_ic", "val_auc", "val_acc", "val_mcc", "val_mae")
