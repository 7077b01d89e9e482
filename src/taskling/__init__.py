"""taskling: your documents and a plain-language task in, a small tuned model out.

The whole loop lives in `taskling.loop`; each stage is `taskling.stages.<verb>.run`.
"""
__version__ = "0.1.0"
