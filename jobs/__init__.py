"""The work: one module per job, each with the same shape (NAME, Options, run), and the registry."""
