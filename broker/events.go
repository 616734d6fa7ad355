package broker

// Audit event types: every one the broker writes, in one list.
const (
	EventTaskCreated       = "task.created"
	EventTaskApproved      = "task.approved"
	EventTaskDenied        = "task.denied"
	EventTaskClosed        = "task.closed"
	EventTaskExpired       = "task.expired"
	EventTaskRevoked       = "task.revoked"
	EventCredentialIssued  = "credential.issued"
	EventCredentialRevoked = "credential.revoked"
	EventRequestRefused    = "request.refused"
	EventBackendRevokeFail = "backend.revoke_failed"
	// EventBackendOrphan records a backend credential that Errand created
	// but never recorded (a crash between the backend call and the
	// commit), found by the reconciler and queued for revocation: an alarm.
	EventBackendOrphan    = "backend.orphan_found"
	EventAgentSuspended   = "agent.suspended"
	EventAgentUnsuspended = "agent.unsuspended"
	// EventKeysChanged records a signing-key rotation or retirement.
	EventKeysChanged = "keys.changed"
	// EventKeysRefused records a stored signing key that is not the key
	// its row claims (tampered with), and so is neither published nor used.
	EventKeysRefused = "keys.refused"
	// Step-up approvals: asked for by a @step_up policy, decided by the
	// user.
	EventApprovalRequested = "approval.requested"
	EventApprovalApproved  = "approval.approved"
	EventApprovalDenied    = "approval.denied"
	// EventNotificationFailed records a webhook delivery given up: its
	// receiver did not accept it within the notification worker's limit.
	EventNotificationFailed = "notification.failed"
)

// EventTypes lists every audit event type, for filter validation.
var EventTypes = []string{
	EventTaskCreated, EventTaskApproved, EventTaskDenied, EventTaskClosed, EventTaskExpired, EventTaskRevoked,
	EventCredentialIssued, EventCredentialRevoked, EventRequestRefused, EventBackendRevokeFail, EventBackendOrphan,
	EventAgentSuspended, EventAgentUnsuspended, EventKeysChanged, EventKeysRefused,
	EventApprovalRequested, EventApprovalApproved, EventApprovalDenied, EventNotificationFailed,
}
