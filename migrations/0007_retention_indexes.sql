-- dwasm: no-transaction
-- dwasm schema, version 7: the indexes of retention and chunk GC (0006_retention_gc.sql), built
-- concurrently: on a database with many flows a plain CREATE INDEX would block every checkpoint
-- while it builds. Each build is preceded by dropping a leftover of an interrupted one (an
-- invalid index of the same name), so the file can run again (app/db/migrate.py).

-- The chunk GC looks at chunks untouched for its grace period, oldest first.
DROP INDEX CONCURRENTLY IF EXISTS chunks_touched;
CREATE INDEX CONCURRENTLY chunks_touched ON chunks (touched_at, hash);

-- Retention finds finished flows by age ...
DROP INDEX CONCURRENTLY IF EXISTS flows_finished;
CREATE INDEX CONCURRENTLY flows_finished ON flows (finished_at) WHERE finished_at IS NOT NULL;

-- ... and deletes their signals with them.
DROP INDEX CONCURRENTLY IF EXISTS signals_flow;
CREATE INDEX CONCURRENTLY signals_flow ON signals (flow_id);
