"""Observability of the service: structured logs with request and flow context
(:mod:`.logs`, :mod:`.requests`), the flow and task metrics (:mod:`.flows`) and the event-loop
lag monitor (:mod:`.loop_lag`). docs/observability.md lists every log field and metric."""
