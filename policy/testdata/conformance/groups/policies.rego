package errand

allow contains "allow"

deny contains "corp-payments-only" if {
	input.action == "payments.refund"
	not "https://login.example#payments" in input.user.groups
}

deny contains "payments-anywhere" if {
	input.action == "payments.void"
	not "payments" in input.user.groups
}
