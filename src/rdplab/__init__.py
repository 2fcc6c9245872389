"""rdplab: a break-fix lab for Remote Desktop error 0x904 (extended 0x7)."""

__version__ = "0.1.0"
