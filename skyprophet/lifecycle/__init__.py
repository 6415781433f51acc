"""The model's life in the registry: gate, registration, acceptance, promotion, correction, the chained pipeline.

Above ``science``, ``monitoring`` and ``ops`` (it composes them) and below ``steps`` (the entry
points call it; none calls another).
"""
