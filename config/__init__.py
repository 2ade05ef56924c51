"""What should happen: the settings model (config.settings), loading it from file + environment +
flags (config.loader), the shared value types (config.types) and the generated reference.

Nothing is imported here on purpose: job modules import config.types, and the settings model
collects the jobs' Options, so an eager import here would be circular."""
