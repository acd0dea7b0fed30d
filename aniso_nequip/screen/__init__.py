"""Screening crystal pools for highly anisotropic dielectrics (``aniso-nequip screen``).

``sources`` streams the input structures, ``filters`` applies the paper's pool filters,
``dimensionality`` classifies bonded networks, ``layout`` holds a run's settings and file layout,
``runner`` predicts shard by shard (resumable) and merges, ``report`` writes the ranking,
candidates, summary and plots (:mod:`aniso_nequip.plots`).
"""
