package errand

allow contains "allow" if input.context.tool != "z"

allow contains "broken-permit" if {
	input.context.tool == "z"
	to_number(input.context.risk) < 3
}

deny contains "broken-forbid" if {
	input.context.tool == "x"
	to_number(input.context.risk) < 3
}

step_up["broken-step"] := "why" if {
	input.context.tool == "y"
	to_number(input.context.risk) < 3
}
