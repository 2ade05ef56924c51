"""jackpot-maint: scheduling, running, remembering and alerting for the jackpot service's maintenance."""

__version__ = "0.1.0"
