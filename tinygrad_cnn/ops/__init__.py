"""The ops, one module per family; each op is a ``Function`` with its forward and backward side by side."""
