"""Code written by tools, not by hand. Regenerate; never edit.

plan_schema/  flatc's Python builder for csrc/schema/plan.fbs (python csrc/schema/generate.py;
              tests/runtime/test_schema.py fails when it is stale).
"""
