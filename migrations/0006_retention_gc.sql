-- dwasm schema, version 6: retention of finished flows and garbage collection of memory chunks
-- (docs/flows.md, "Retention and garbage collection"). Additive only: nodes of the previous
-- version keep working against it during a rolling upgrade.

-- When a chunk was last inserted or re-sent by a checkpoint. The chunk GC deletes only chunks
-- untouched for a grace period that no flow's latest manifest references; an engine trusts its
-- cache's "this chunk is stored" for a shorter time than that grace (app/flows/chunks.py), so a
-- chunk a checkpoint skips sending cannot be one the GC is deleting. Existing chunks count as
-- touched now (a constant default: no table rewrite).
-- Its index, and those retention needs, are built without blocking writers by
-- 0007_retention_indexes.sql.
ALTER TABLE chunks ADD COLUMN touched_at timestamptz NOT NULL DEFAULT now();

-- When a node of the previous version last committed a checkpoint (through the old signature
-- of dwasm_checkpoint below). Its chunk cache trusts entries forever, so the chunk GC waits
-- until no such checkpoint happened for its grace period. One row.
CREATE TABLE gc_state (
    id                     boolean PRIMARY KEY DEFAULT true CHECK (id),
    legacy_checkpoint_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO gc_state DEFAULT VALUES;

-- Which of p_shards are no longer held at p_epochs (same position), checked like
-- dwasm_check_epoch (0003_fast_paths.sql): the shards' fencing locks are taken shared, in
-- shard order, and held until the transaction ends, so a claim either waits for the caller's
-- writes or is seen here. Retention deletes nothing of a shard listed.
CREATE FUNCTION dwasm_fenced_shards(p_shards integer[], p_epochs bigint[])
RETURNS SETOF integer
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1685545331, s)
       FROM (SELECT DISTINCT s FROM unnest(p_shards) AS s ORDER BY s) AS q;
    RETURN QUERY
        SELECT x.s FROM unnest(p_shards, p_epochs) AS x(s, e)
          LEFT JOIN shard_epochs se ON se.shard = x.s
         WHERE se.epoch IS DISTINCT FROM x.e;
END
$$;

-- dwasm_checkpoint with one more argument, p_chunk_refresh (seconds): a chunk sent again that
-- is stored already gets touched_at = now() when its touched_at is older than that (not on
-- every checkpoint: that would rewrite shared chunk rows all the time). Otherwise as in
-- 0003_fast_paths.sql.
CREATE FUNCTION dwasm_checkpoint(
    p_flow_id text, p_expected_seq bigint, p_status text, p_manifest text,
    p_stdout bytea, p_stderr bytea, p_waiting text, p_wake_at timestamptz,
    p_exit_code integer, p_error text, p_task_seq integer,
    p_chunk_hashes text[], p_chunk_data bytea[],
    p_task_seqs integer[], p_task_queues text[], p_task_payloads bytea[],
    p_task_max_attempts integer[],
    p_delivered_tasks text[], p_consumed_signals bigint[], p_skip_signals bigint[],
    p_event_types text[], p_event_data text[],
    p_new_chunks integer, p_chunk_bytes bigint,
    p_child_ids text[], p_child_modules text[], p_child_requests text[],
    p_child_hashes text[], p_child_handles integer[], p_child_shards integer[],
    p_shard integer, p_epoch bigint, p_node text, p_chunk_refresh double precision)
RETURNS TABLE (new_seq bigint, status text)
LANGUAGE plpgsql AS $$
DECLARE
    cur record;
    final_status text := p_status;
    v_waiting jsonb := NULL;
    v_wake timestamptz := NULL;
    handles integer[];
    ready boolean := false;
BEGIN
    PERFORM dwasm_check_epoch(p_shard, p_epoch);
    SELECT f.status, f.checkpoint_seq INTO cur FROM flows f WHERE f.id = p_flow_id FOR UPDATE;
    IF NOT FOUND OR cur.status NOT IN ('running', 'waiting')
            OR cur.checkpoint_seq <> p_expected_seq THEN
        RETURN;
    END IF;
    IF p_status = 'waiting' THEN
        v_waiting := p_waiting::jsonb;
        IF v_waiting ->> 'op' = 'await' THEN
            handles := ARRAY(SELECT jsonb_array_elements_text(v_waiting -> 'handles')::int);
            ready := EXISTS (SELECT 1 FROM tasks t WHERE t.flow_id = p_flow_id
                                 AND t.seq = ANY (handles)
                                 AND t.status IN ('completed', 'failed') AND NOT t.delivered
                                 AND NOT (t.id = ANY (p_delivered_tasks)))
                  OR EXISTS (SELECT 1 FROM flows c WHERE c.parent_id = p_flow_id
                                 AND c.parent_handle = ANY (handles)
                                 AND c.status IN ('completed', 'failed', 'cancelled'));
        ELSIF v_waiting ->> 'op' = 'signal' THEN
            ready := EXISTS (SELECT 1 FROM signals s WHERE s.flow_id = p_flow_id
                                 AND s.name = v_waiting ->> 'name' AND NOT s.consumed
                                 AND NOT (s.id = ANY (p_skip_signals)));
        END IF;
        IF ready THEN
            final_status := 'running';
            v_waiting := NULL;
        ELSE
            v_wake := p_wake_at;
        END IF;
    END IF;

    UPDATE flows f SET status = final_status,
           checkpoint = COALESCE(p_manifest::jsonb, f.checkpoint),
           checkpoint_seq = f.checkpoint_seq + 1, stdout = f.stdout || p_stdout,
           stderr = f.stderr || p_stderr, waiting = v_waiting, wake_at = v_wake,
           exit_code = p_exit_code, error = p_error,
           task_seq = GREATEST(f.task_seq, p_task_seq), updated_at = now(),
           finished_at = CASE WHEN final_status IN ('completed', 'failed') THEN now() END
     WHERE f.id = p_flow_id;

    IF cardinality(p_chunk_hashes) > 0 THEN
        -- Sorted, so that two checkpoints sending the same chunks lock them in one order.
        INSERT INTO chunks AS c (hash, data)
        SELECT DISTINCT ON (h) h, d FROM unnest(p_chunk_hashes, p_chunk_data) AS x(h, d)
         ORDER BY h
        ON CONFLICT (hash) DO UPDATE SET touched_at = now()
         WHERE c.touched_at < now() - make_interval(secs => p_chunk_refresh);
    END IF;
    IF cardinality(p_task_seqs) > 0 THEN
        INSERT INTO tasks (id, flow_id, seq, queue, payload, status, max_attempts)
        SELECT p_flow_id || '/' || s, p_flow_id, s, q, p, 'pending', m
          FROM unnest(p_task_seqs, p_task_queues, p_task_payloads, p_task_max_attempts)
               AS x(s, q, p, m)
        ON CONFLICT (id) DO NOTHING;
    END IF;
    IF cardinality(p_child_ids) > 0 THEN
        INSERT INTO flows (id, module_id, status, request, request_hash, parent_id,
                           parent_handle, shard)
        SELECT i, m, 'running', r::jsonb, h, p_flow_id, ph, sh
          FROM unnest(p_child_ids, p_child_modules, p_child_requests, p_child_hashes,
                      p_child_handles, p_child_shards) AS x(i, m, r, h, ph, sh)
        ON CONFLICT (id) DO NOTHING;
        -- Children in shards of other nodes: their owners run them when told (app/flows/engine).
        PERFORM pg_notify('dwasm_wake', i) FROM unnest(p_child_ids) AS i;
    END IF;
    IF cardinality(p_delivered_tasks) > 0 THEN
        UPDATE tasks SET delivered = true WHERE id = ANY (p_delivered_tasks);
    END IF;
    IF cardinality(p_consumed_signals) > 0 THEN
        UPDATE signals SET consumed = true WHERE id = ANY (p_consumed_signals);
    END IF;
    IF final_status IN ('completed', 'failed') THEN
        UPDATE tasks SET status = 'cancelled', lease_until = NULL, updated_at = now(),
               delivered = true
         WHERE flow_id = p_flow_id AND tasks.status IN ('pending', 'leased');
    END IF;
    INSERT INTO events (flow_id, type, data)
    SELECT p_flow_id, t, d::jsonb
      FROM unnest(p_event_types || ARRAY['checkpoint'],
                  p_event_data || ARRAY[jsonb_build_object(
                      'seq', p_expected_seq + 1, 'status', final_status,
                      'new_chunks', p_new_chunks, 'chunk_bytes', p_chunk_bytes,
                      'waiting', v_waiting, 'node', p_node, 'epoch', p_epoch)::text])
           WITH ORDINALITY AS x(t, d, n)
     ORDER BY n;
    new_seq := p_expected_seq + 1;
    status := final_status;
    RETURN NEXT;
END
$$;

-- The previous signature, still called by nodes of the previous version during a rolling
-- upgrade: it records that such a node checkpointed (at most once a minute) and commits like
-- the new one, refreshing chunks older than 15 minutes.
CREATE OR REPLACE FUNCTION dwasm_checkpoint(
    p_flow_id text, p_expected_seq bigint, p_status text, p_manifest text,
    p_stdout bytea, p_stderr bytea, p_waiting text, p_wake_at timestamptz,
    p_exit_code integer, p_error text, p_task_seq integer,
    p_chunk_hashes text[], p_chunk_data bytea[],
    p_task_seqs integer[], p_task_queues text[], p_task_payloads bytea[],
    p_task_max_attempts integer[],
    p_delivered_tasks text[], p_consumed_signals bigint[], p_skip_signals bigint[],
    p_event_types text[], p_event_data text[],
    p_new_chunks integer, p_chunk_bytes bigint,
    p_child_ids text[], p_child_modules text[], p_child_requests text[],
    p_child_hashes text[], p_child_handles integer[], p_child_shards integer[],
    p_shard integer, p_epoch bigint, p_node text)
RETURNS TABLE (new_seq bigint, status text)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE gc_state SET legacy_checkpoint_at = now()
     WHERE legacy_checkpoint_at < now() - interval '1 minute';
    RETURN QUERY SELECT * FROM dwasm_checkpoint(
        p_flow_id, p_expected_seq, p_status, p_manifest, p_stdout, p_stderr, p_waiting,
        p_wake_at, p_exit_code, p_error, p_task_seq, p_chunk_hashes, p_chunk_data, p_task_seqs,
        p_task_queues, p_task_payloads, p_task_max_attempts, p_delivered_tasks,
        p_consumed_signals, p_skip_signals, p_event_types, p_event_data, p_new_chunks,
        p_chunk_bytes, p_child_ids, p_child_modules, p_child_requests, p_child_hashes,
        p_child_handles, p_child_shards, p_shard, p_epoch, p_node, 900.0::double precision);
END
$$;
