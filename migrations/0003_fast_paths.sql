-- The two writes every task round trip makes, as functions: a flow's checkpoint and a task's
-- completion. Each is one round trip to the server (one statement, its own transaction) instead of
-- BEGIN, a locking read, the checks, the writes and COMMIT. Inside a PL/pgSQL function every
-- statement takes a fresh snapshot (READ COMMITTED), so a check that follows a row lock sees
-- whatever committed before the lock was granted: the locking discipline of app/flows/store.py
-- (lock the flow row first, then look at its tasks and signals) holds as in the Python version.
--
-- Fencing (docs/cluster.md): both take the writer's shard and epoch, first take the shard's
-- fencing lock in shared mode (an advisory transaction lock, key (1685545331, shard); a new
-- owner's claim takes it exclusively, topology/fencing.py), then read the shard's epoch: a
-- claim either waits for this write to commit, or has committed and this statement (a fresh
-- snapshot, READ COMMITTED) sees the new epoch. If the epoch moved they raise SQLSTATE DW001 and
-- write nothing. A shared advisory lock lives in the lock manager only; a row lock FOR SHARE
-- would rewrite the shard's row (a MultiXact) on every checkpoint. A NULL epoch skips the check
-- (tools and tests that run an engine without a topology).

CREATE FUNCTION dwasm_check_epoch(p_shard integer, p_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_current bigint;
BEGIN
    IF p_epoch IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(1685545331, p_shard);
    SELECT se.epoch INTO v_current FROM shard_epochs se WHERE se.shard = p_shard;
    IF v_current IS DISTINCT FROM p_epoch THEN
        RAISE EXCEPTION 'shard %: epoch % is fenced (now %)', p_shard, p_epoch,
              coalesce(v_current::text, 'unclaimed') USING ERRCODE = 'DW001';
    END IF;
END
$$;

-- Commit a flow's checkpoint. Returns (new checkpoint_seq, status written), or no row when the
-- flow moved on meanwhile (another checkpoint, a cancel): then nothing is written.
-- p_status 'waiting' becomes 'running' when what p_waiting waits for is already in the
-- database (signals in p_skip_signals were handed to the run already and do not count).
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
    p_shard integer, p_epoch bigint, p_node text)
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
        INSERT INTO chunks (hash, data)
        SELECT h, d FROM unnest(p_chunk_hashes, p_chunk_data) AS x(h, d)
        ON CONFLICT (hash) DO NOTHING;
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

-- Record a task's completion (p_status 'completed') or final failure ('failed') reported with
-- lease p_lease_id, and make its flow runnable if the flow awaits it. outcome is
--   'ok'        recorded now (woken: whether the flow became runnable),
--   'duplicate' the same report was recorded before (nothing changes),
--   'conflict'  the task moved on (another lease, finished, cancelled): nothing changes,
--   'missing'   no such task.
-- The task's columns come back in every case but 'missing', for the answer or the problem.
CREATE FUNCTION dwasm_finish_task(
    p_task_id text, p_lease_id text, p_status text, p_result bytea, p_error text,
    p_event_type text, p_event_data text, p_shard integer, p_epoch bigint)
RETURNS TABLE (outcome text, woken boolean, id text, flow_id text, seq integer, queue text,
               status text, attempt integer, max_attempts integer, visible_at timestamptz,
               lease_id text, lease_until timestamptz, error text, delivered boolean,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    fid text;
    t tasks%ROWTYPE;
BEGIN
    PERFORM dwasm_check_epoch(p_shard, p_epoch);
    SELECT tk.flow_id INTO fid FROM tasks tk WHERE tk.id = p_task_id;
    IF NOT FOUND THEN
        outcome := 'missing';
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM 1 FROM flows f WHERE f.id = fid FOR UPDATE;   -- the flow first: see store.py
    SELECT * INTO t FROM tasks tk WHERE tk.id = p_task_id FOR UPDATE;
    woken := false;
    IF t.status = p_status AND t.lease_id = p_lease_id
            AND ((p_status = 'completed' AND t.result IS NOT DISTINCT FROM p_result)
                 OR (p_status = 'failed' AND t.error IS NOT DISTINCT FROM p_error)) THEN
        outcome := 'duplicate';
    ELSIF t.status NOT IN ('leased', 'pending') OR t.lease_id IS DISTINCT FROM p_lease_id THEN
        outcome := 'conflict';
    ELSE
        UPDATE tasks tk SET status = p_status, result = p_result, error = p_error,
               lease_until = NULL, updated_at = now()
         WHERE tk.id = p_task_id RETURNING * INTO t;
        INSERT INTO events (flow_id, type, data)
        VALUES (fid, p_event_type, p_event_data::jsonb || jsonb_build_object('attempt', t.attempt));
        UPDATE flows f SET status = 'running', updated_at = now()
         WHERE f.id = fid AND f.status = 'waiting' AND f.waiting ->> 'op' = 'await'
           AND f.waiting -> 'handles' @> to_jsonb(t.seq);
        woken := FOUND;
        outcome := 'ok';
    END IF;
    id := t.id; flow_id := t.flow_id; seq := t.seq; queue := t.queue; status := t.status;
    attempt := t.attempt; max_attempts := t.max_attempts; visible_at := t.visible_at;
    lease_id := t.lease_id; lease_until := t.lease_until; error := t.error;
    delivered := t.delivered; created_at := t.created_at; updated_at := t.updated_at;
    RETURN NEXT;
END
$$;
