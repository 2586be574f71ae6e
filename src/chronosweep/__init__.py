"""chronosweep: time-sensitive knowledge editing, evaluated and swept."""

__version__ = "0.1.0"
