"""The floor of the house: helpers that every layer may import and that import nothing else of the project.

errors (the exception types), files (atomic writes, hashes), imaging (pixel conversions, centre crop),
weights (finding network weights offline), distributed (torchrun).
"""
