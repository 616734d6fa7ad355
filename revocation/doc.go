// Package revocation runs Errand's revocation workers, each a Run(ctx)
// error supervised by serve and dev:
//
//   - Sweeper records expiries: approved tasks past their time become
//     expired with every credential revoked, pending ones denied. Replicas
//     share the work (SELECT … FOR UPDATE SKIP LOCKED) and never do it twice.
//   - Outbox carries out backend revocations (Vault leases, …) queued in the
//     same transaction as the close or expiry, retrying forever with capped
//     exponential backoff, and raises backend.revoke_failed once an item is
//     still unconfirmed after AlarmAfter.
//   - Reconciler finds the per-task Vault tokens Errand created but never
//     recorded (a replica killed between the Vault call and the commit),
//     by the intent each token names in its metadata, records them and
//     queues their revocation, with an alarm; it resolves the intents that
//     created nothing.
//   - Hub tells the revocation feed's streams that something was revoked,
//     woken by PostgreSQL LISTEN/NOTIFY where available and by polling
//     otherwise.
//   - Feed is the replica's one reader of the revocation feed: woken by the
//     Hub, it reads the feed from the database once for every stream, keeps
//     the newest entries in memory and wakes the streams only when its head
//     moves (R03).
//
// A replica killed at any point loses nothing: all state is in the
// database, and the next start resumes the sweep and the outbox.
package revocation
