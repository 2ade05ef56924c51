"""What should happen: the settings model, loading it from file + environment + flags, validation."""

from config.loader import load_settings, LoadedSettings
from config.settings import Settings

__all__ = ["load_settings", "LoadedSettings", "Settings"]
