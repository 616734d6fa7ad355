package errand

# Every write to production is approved again by the user, request by request.
step_up["prod-writes-step-up"] := "a write to production needs your approval each time" if {
	input.context.environment == "prod"
	input.context.class == "write"
}

# Finance data too, whatever the action.
step_up["finance-step-up"] := "finance data needs your approval" if startswith(input.context.dataset, "finance/")
