"""Sampling-parameter conformance: the canonical spec's mapping to each engine, as data and code.

- table.py: the mapping table (every field of the integration design's table and of the installed engines'
  parameter classes), written into each run directory as sampling_table.json;
- introspect.py: reads the installed engines' parameter classes (`python -m harness.sampling.introspect`);
- mapping.py: canonical SamplingSpec -> each engine's parameters and back, generated from the table's rows
  with the converters of the engine's sampling dialect (harness/backends/*sampling.py, named by the
  registry), and explicit issues;
- expect.py: what the reference computes for the behavioural checks (exact distributions, greedy
  expectations), called from the recorder's score phase;
- stats.py: chi-square goodness of fit, power and sample size, repeat independence.

The checks themselves are harness/checks/sampling.py; docs/sampling.md has the figures.
"""
