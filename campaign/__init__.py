"""How, where and how much: campaign files, planning, Ray execution, store, CLI."""

__version__ = "0.1.0"
