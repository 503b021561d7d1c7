"""Serving under load: one OpenAI-compatible server swept over concurrency levels (or Poisson request rates),
with latency percentiles, throughput, goodput and the answers judged at every level (`sweep`, `metrics`,
`report`; the request is `request.LoadRunRequest`). Pure HTTP client, numpy and `tokenizers`: safe in the UI
process; the reference's answers come from the arena's own workers."""
