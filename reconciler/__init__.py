"""restik's controller side: the Backup model, rendering, planning and the CLI."""

__version__ = "0.1.0"
