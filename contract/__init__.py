"""contract: the interfaces the simulator, the engine and analysis share.

The TOML config tree (config), workloads and their random streams (workload), the
engine trace format (trace), request/step accounting and vLLM-named metrics
(metrics), run folders, policy variants and summary.json (runs, outpaths), and the
`tetris select` command (cli). Imports theory (the math); theory never imports it.
"""
