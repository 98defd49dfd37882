"""Names shared by the benchmark and its tasks (``bench_tasks``), importable without Django."""

NOOP = "bench.noop"
RECORD_START = "bench.record_start"
REPORT_QUERY = "bench.report_query"
PAYLOAD_SINK = "bench.payload_sink"
#: Redis list of "<seq> <published at> <started at>" lines, one per ``record_start`` run.
STARTS_KEY = "bench:starts"
#: Set to 1 in a worker's environment: ``bench_tasks`` disconnects the worker metrics at import.
DISABLE_METRICS = "BENCH_DISABLE_METRICS"
