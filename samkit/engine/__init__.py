"""The data engine behind ``samkit serve``: storage, accounts, embeddings, jobs and statistics."""
