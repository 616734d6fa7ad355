package errand

# Agents may do what the invariants and their approved task allow...
allow contains "allow-agents" if input.principal.type == "agent"

# ...except high-risk actions, which no agent gets here.
deny contains "deny-high-risk" if input.context.risk == "high"

# The shell tool never gets credentials.
deny contains "deny-shell-tool" if input.context.tool == "shell"

# Personal data stays with people.
deny contains "deny-pii-datasets" if startswith(input.context.dataset, "pii/")

# Admin actions never reach production.
deny contains "deny-prod-admin" if {
	input.context.environment == "prod"
	input.context.class == "admin"
}

# Refunds only for users of the payments team, once they have approved.
deny contains "payments-team-only" if {
	input.action == "payments.refund"
	input.context.operation != "create"
	not "payments" in input.user.groups
}

# A write to production is asked of the user again, request by request.
step_up["prod-writes-step-up"] := "writes to production need the user's approval each time" if {
	input.context.environment == "prod"
	input.context.class == "write"
}
