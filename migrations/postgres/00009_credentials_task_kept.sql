-- +goose Up
-- A credential's task is kept by the schema's shape rather than checked
-- per row. The foreign key looked the task up again for every credential
-- inserted (~10 µs of PostgreSQL CPU per mint, docs/benchmarks.md),
-- though every insert already holds its task's row lock: the fast path's
-- statement joins the task FOR UPDATE, and the slow path locks it first
-- and inserts with INSERT … SELECT FROM tasks. What the key also guarded,
-- a task going away under its credentials, is refused here for everyone,
-- the table's owner included: a task is never deleted or truncated, and
-- its id never changes (nor does a credential's task_id:
-- credentials_only_revoke).
ALTER TABLE credentials DROP CONSTRAINT credentials_task_id_fkey;

-- +goose StatementBegin
CREATE FUNCTION tasks_kept() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'tasks are never deleted and keep their id';
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER tasks_no_delete BEFORE DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_kept();
CREATE TRIGGER tasks_no_truncate BEFORE TRUNCATE ON tasks FOR EACH STATEMENT EXECUTE FUNCTION tasks_kept();
CREATE TRIGGER tasks_id_fixed BEFORE UPDATE OF id ON tasks FOR EACH ROW
    WHEN (NEW.id IS DISTINCT FROM OLD.id) EXECUTE FUNCTION tasks_kept();
