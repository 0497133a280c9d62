"""Code that runs inside a backend toolchain, never in the orchestrator.

Modules here may import only the standard library and the packages of their own
toolchain; they must not import ``hubquant``.
"""
