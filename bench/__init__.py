"""``make bench``: the service beside the floor of its own stack, measured in one run.

A benchmark, never a test: it starts its own ``redis-server`` (no persistence) on a free loopback port,
the real service and two floor servers (a bare gRPC echo and a "minimal Delegate/Introspect" that does
only the cryptography and one Redis round trip) as separate processes on the same gRPC server model, and
drives them from a separate load-generator process. Every loop is bounded in count and in time; nothing
leaves loopback. Results land in ``bench/results/`` (git-ignored): JSON, a Markdown table and a PNG chart.

Modules: :mod:`bench.orchestrator` (the run), :mod:`bench.server` (the server processes),
:mod:`bench.loadgen` (the load generator), :mod:`bench.scale` (chain size, memory, round trips),
:mod:`bench.report` (medians, ratios, JSON, Markdown, chart), :mod:`bench.profiling` (py-spy summaries).
"""
