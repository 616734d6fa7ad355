package errand

# By risk: medium-risk reads (the orders database) are not for agents.
deny contains "deny-medium-risk-reads" if {
	input.context.risk == "medium"
	input.context.class == "read"
}

# By environment: no credential for the infra repository is used in
# production, nor a pattern that reaches it.
deny contains "deny-prod-infra" if {
	input.context.environment == "prod"
	input.context.operation in {"mint", "secret", "evaluate"}
	reaches_infra
}

reaches_infra if input.resource.head == "acme/infra"

reaches_infra if "acme/infra/**" in input.resource.ancestors

reaches_infra if {
	input.resource.wildcard
	input.resource.head in {"", "acme"}
}

# By tool: the shell tool gets no credential.
deny contains "deny-shell-tool" if input.context.tool == "shell"

# By dataset: personal data stays with people.
deny contains "deny-pii-datasets" if startswith(input.context.dataset, "pii/")
