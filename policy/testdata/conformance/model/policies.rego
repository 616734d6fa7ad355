package errand

allow contains "model" if {
	input.principal == {"type": "agent", "id": "https://agents.example#bot", "issuer": "https://agents.example", "sub": "bot"}
	input.action == "github.repo.read"
	input.resource.path == "acme/api"
	input.resource.head == "acme/api"
	not input.resource.wildcard
	"acme/**" in input.resource.ancestors
	input.context.task_id == "tsk_x"
	input.user.id == "https://login.example#alice"
	input.user.issuer == "https://login.example"
	input.user.sub == "alice"
	"engineers" in input.user.groups
	"https://login.example#engineers" in input.user.groups
	input.context.risk == "low"
	input.context.class == "read"
	input.context.audience == "https://staging.example"
	input.context.environment == "staging"
	input.context.tool == ""
	input.context.dataset == ""
	input.context.operation == "mint"
	not input.context.dpop
	input.context.time == "2026-11-30T10:00:00Z"
	time.clock([time.parse_rfc3339_ns(input.context.time), "UTC"]) == [10, 0, 0]
}
