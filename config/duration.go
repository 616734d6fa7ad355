package config

import (
	"fmt"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a length of time written as Go writes one ("90s", "5m",
// "8h"), or 0. A bad or negative value is a decoding error naming its
// line, collected with every other problem of the file.
type Duration time.Duration

// UnmarshalYAML reads a duration such as 5m or 8h, or 0.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n)
	if err != "" {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as time.Duration.String does (5m0s).
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// parseDuration reads a scalar duration, 0 included; the second result
// says what is wrong, in the words of the file.
func parseDuration(n *yaml.Node) (time.Duration, string) {
	if n.Kind != yaml.ScalarNode {
		return 0, "a duration such as 5m or 8h, not a list or a mapping"
	}
	if n.Value == "0" {
		return 0, ""
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil || d < 0 {
		return 0, fmt.Sprintf("%q is not a duration such as 5m or 8h", n.Value)
	}
	return d, ""
}

// parseWhole reads a scalar whole number of at least minimum.
func parseWhole(n *yaml.Node, minimum int) (int, string) {
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < minimum {
		what := "a positive whole number"
		if minimum == 0 {
			what = "a whole number, 0 or more"
		}
		return 0, fmt.Sprintf("%q is not %s", n.Value, what)
	}
	return v, ""
}

// parseRate reads a scalar positive number of requests per second.
func parseRate(n *yaml.Node) (float64, string) {
	f, err := strconv.ParseFloat(n.Value, 64)
	if n.Kind != yaml.ScalarNode || err != nil || f <= 0 {
		return 0, fmt.Sprintf("%q is not a positive number", n.Value)
	}
	return f, ""
}
