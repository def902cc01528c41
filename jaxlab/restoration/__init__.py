"""All-in-one image restoration (Instruct-IPT): task-mixed batches and the synchronous training loss."""
