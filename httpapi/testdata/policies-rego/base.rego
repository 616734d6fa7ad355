# The Rego translation of ../policies/*.cedar, rule for rule: the HTTP
# tests run against both and expect the same answers.
package errand

allow contains "allow-agents" if input.principal.type == "agent"
