"""The compiler: IR, ops, autodiff, PEFT specs, optimisation passes, memory planning and the plan
file writer. It imports nothing above it (no frontend, no runtime): backends reach it only as
target descriptions (target.py)."""

__version__ = "0.1.0"
