"""The machinery behind the rotate_logs job: streaming copy and gzip, rotated-file naming,
free-space checks and telling a writer to reopen its log. jobs/rotate_logs.py decides what to do."""
