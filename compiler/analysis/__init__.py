"""Analyses: functions that read a graph and compute facts about it, changing nothing.

memory_plan  lifetimes -> arena offsets, persistent layout, the planned peak
schedule     dependency regions and list scheduling used by the reordering passes
cost_model   roofline estimate of a kernel's time, used by targets to rank kernel variants

Passes (compiler/passes/, one per file) transform the graph and use these.
"""
