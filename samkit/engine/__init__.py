"""The data engine behind ``samkit serve``: storage, accounts, embeddings, jobs, statistics, model versions and
retraining."""
